"""At-least-once consumption of a work stream through a consumer group.

An entry is acknowledged only after its handler returned. A handler that fails leaves the entry
pending; after ``claim_idle_ms`` any consumer of the group (this one after a restart, or another
process after this one died) claims it again. An entry that cannot be parsed, or whose handler has
failed ``max_deliveries`` times, moves to the dead-letter stream with the error and is then
acknowledged: never dropped in silence, never retried forever.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import ResponseError

from events import replies
from events.envelope import Event
from events.metrics import count
from events.streams import FIELD, Names, stream_id_key

log = logging.getLogger(__name__)

Handler = Callable[[Event], None]
TRIM_EVERY_SECONDS = 60.0
# Stale entries are looked for at most this often (and at least once a tenth of ``claim_idle_ms``):
# an XAUTOCLAIM before every read was a third of a busy dispatcher's round trips, for entries that
# are reclaimed only after ``claim_idle_ms`` anyway.
RECLAIM_EVERY_SECONDS = 1.0


class PoisonEvent(Exception):
    """The entry can never be handled (unparseable, no handler): dead-letter it at once."""


def lost_group(exc: ResponseError) -> bool:
    """A Redis that restarted empty has lost every consumer group: create it again and carry on."""
    return "NOGROUP" in str(exc)


@dataclass
class StreamConsumer:
    client: redis.Redis  # decode_responses=True
    names: Names
    stream: str
    group: str
    consumer: str
    handler: Handler
    max_deliveries: int = 5
    claim_idle_ms: int = 30_000
    block_ms: int = 1_000
    batch: int = 50
    # Handled entries stay this long (to inspect, or to redeliver by hand), then go.
    retain_ms: int = 300_000
    # False when another reader takes the new entries (``workers/loop_reader.py``): this consumer's
    # thread then only reclaims stale entries and trims.
    read_new: bool = True
    _next_trim: float = field(default=0.0, init=False, repr=False)
    _next_reclaim: float = field(default=0.0, init=False, repr=False)

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.ensure_group()
                while not stop.is_set():
                    self.poll_once()
                    self.maybe_trim()
                    if not self.read_new:
                        stop.wait(max(0.0, self._next_reclaim - time.monotonic()))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("consumer %s lost Redis, retrying: %s", self.stream, exc)
                stop.wait(1.0)
            except ResponseError as exc:
                if not lost_group(exc):
                    raise
                log.warning("consumer group of %s is gone, recreating it", self.stream)

    def maybe_trim(self) -> None:
        """Trim the stream at most once per ``TRIM_EVERY_SECONDS``: without it a work stream keeps
        every entry ever published (a tool call, a message, an audit record each)."""
        now = time.monotonic()
        if now >= self._next_trim:
            self._next_trim = now + TRIM_EVERY_SECONDS
            self.trim()

    def trim(self) -> int:
        """Drop the entries every group of the stream has been handed and has acknowledged, and that
        are older than ``retain_ms``; returns how many went. Undelivered and pending entries stay."""
        redis_now = self.client.time()
        bound = (redis_now[0] * 1000 + redis_now[1] // 1000 - self.retain_ms, 0)
        for group in self.client.xinfo_groups(self.stream):
            bound = min(bound, stream_id_key(str(group["last-delivered-id"])))
            pending = self.client.xpending(self.stream, group["name"])
            if pending["pending"]:
                bound = min(bound, stream_id_key(str(pending["min"])))
        if bound <= (0, 0):
            return 0
        return int(self.client.xtrim(self.stream, minid=f"{bound[0]}-{bound[1]}", approximate=False))

    def poll_once(self) -> int:
        """Reclaim stale entries (when due), then read new ones (with ``read_new``); returns how many
        were handled."""
        handled = 0
        now = time.monotonic()
        if now >= self._next_reclaim:
            handled = self._reclaim()
            # A full batch may have left more behind: look again on the next poll.
            if handled < self.batch:
                self._next_reclaim = now + min(RECLAIM_EVERY_SECONDS, self.claim_idle_ms / 10_000)
        if not self.read_new:
            return handled
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=self.batch, block=self.block_ms
        )
        for _, entries in replies.streams(reply):
            for entry_id, fields in entries:
                self.handle(entry_id, fields, deliveries=1)
                handled += 1
        return handled

    def _reclaim(self) -> int:
        _, entries, deleted = self.client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id="0-0",
            count=self.batch,
        )
        for entry_id in deleted or []:
            self.client.xack(self.stream, self.group, entry_id)
        for entry_id, fields in entries:
            pending = self.client.xpending_range(self.stream, self.group, min=entry_id, max=entry_id, count=1)
            deliveries = int(pending[0]["times_delivered"]) if pending else self.max_deliveries
            self.handle(entry_id, fields, deliveries)
        return len(entries)

    def handle(self, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        """One entry, read for the ``deliveries``-th time: handled and acknowledged, dead-lettered, or
        left pending for a later delivery."""
        raw = fields.get(FIELD, "")
        try:
            event = Event.from_wire(raw)
        except ValueError as exc:
            self.dead_letter(entry_id, raw, f"unparseable envelope: {exc}")
            return
        try:
            self.handler(event)
        except PoisonEvent as exc:
            self.dead_letter(entry_id, raw, str(exc))
            return
        except Exception as exc:
            if deliveries >= self.max_deliveries:
                self.dead_letter(entry_id, raw, f"failed {deliveries} times, last: {exc!r}")
            else:
                log.warning(
                    "handler failed for %s %s (delivery %d): %r", self.stream, entry_id, deliveries, exc
                )
                self.counted(self.client, "failed")
            return
        self.ack(entry_id)

    def ack(self, *entry_ids: str) -> None:
        """Acknowledge handled entries, counting them in the same round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, self.group, *entry_ids)
            self.counted(pipe, "acked", len(entry_ids))
            pipe.execute()

    def counted(self, target: Any, outcome: str, amount: int = 1) -> Any:
        return count(
            target,
            self.names,
            "events_consumed",
            amount,
            stream=self.names.stream_label(self.stream),
            outcome=outcome,
        )

    def dead_letter(self, entry_id: str, raw: str, error: str) -> None:
        log.error("dead-lettering %s %s: %s", self.stream, entry_id, error)
        record = {"stream": self.stream, "id": entry_id, "error": error, "data": raw}
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.names.dead_letter(), {FIELD: json.dumps(record)})
            pipe.xack(self.stream, self.group, entry_id)
            self.counted(pipe, "dead_lettered")
            pipe.execute()
