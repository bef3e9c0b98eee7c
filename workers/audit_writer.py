"""The ``audit`` pool: ``audit.recorded`` events from the audit work stream into ``audit_logs``.

It reads the stream through the dispatchers' consumer group itself, in batches, and acknowledges
a batch only after its transaction committed. While PostgreSQL is down nothing is acknowledged:
the events wait in Redis and are written when it is back. Rows are idempotent by event id, so an
event delivered twice is stored once, and each org's rows are hash-chained in ``seq`` order under
a per-org advisory lock.

An event the database refuses for what it is (a constraint or a value: an organization that does
not exist) is poison, not an outage: the batch is written again one event at a time, and each such
event goes to the dead-letter stream with its error while the others are stored.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import redis
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from events import replies
from events.consumer import StreamConsumer, lost_group
from events.envelope import Event, EventType
from events.streams import DISPATCH_GROUP, FIELD, Names, WorkKind
from schemas.db import dispose_engine, open_engine
from schemas.settings import Settings
from services.audit_log import write_batch

log = logging.getLogger(__name__)

BATCH = 500
# Errors that say the event itself cannot be stored: retrying it would block the stream for good.
POISON = (IntegrityError, DataError)


class AuditWriter:
    """Runs in a thread of ``agentapi worker --queues audit`` with its own event loop."""

    def __init__(self, settings: Settings, client: redis.Redis, consumer_name: str) -> None:
        self.settings = settings
        self.names = Names(settings.redis_prefix)
        self.client = client
        # Reuses the consumer's claiming and dead-lettering; the batch write replaces its handler.
        self.consumer = StreamConsumer(
            client,
            self.names,
            self.names.work(WorkKind.AUDIT),
            DISPATCH_GROUP,
            consumer_name,
            handler=lambda _: None,
            claim_idle_ms=settings.dispatch_claim_idle_ms,
            batch=BATCH,
        )

    def run(self, stop: threading.Event) -> None:
        asyncio.run(self._run(stop))

    async def _run(self, stop: threading.Event) -> None:
        engine = open_engine(self.settings, pool_size=2)
        # Made inside the loop, so that a writer started while Redis is away waits for it: made
        # before, its refusal ended the writer's thread and no audit event was stored again.
        grouped = False
        backoff = 0.5
        try:
            while not stop.is_set():
                try:
                    if not grouped:
                        await asyncio.to_thread(self.consumer.ensure_group)
                        grouped = True
                    entries = await asyncio.to_thread(self._read)
                    events = self._parse(entries)
                    done = await self._write(engine, events)
                    if done:
                        await asyncio.to_thread(self.consumer.ack, *done)
                    await asyncio.to_thread(self.consumer.maybe_trim)
                    backoff = 0.5
                except (OperationalError, DBAPIError, OSError) as exc:
                    # The database is away: keep everything pending and try again shortly.
                    log.warning(
                        "audit writer cannot reach the database, retrying in %.1f s: %s", backoff, exc
                    )
                    await asyncio.to_thread(stop.wait, backoff)
                    backoff = min(backoff * 2, 10.0)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("audit writer lost Redis, retrying: %s", exc)
                    await asyncio.to_thread(stop.wait, 1.0)
                except redis.ResponseError as exc:
                    if not lost_group(exc):
                        raise
                    grouped = False
        finally:
            await dispose_engine(engine)

    async def _write(self, engine: AsyncEngine, events: list[tuple[str, Event]]) -> list[str]:
        """Store the events; returns the entry ids to acknowledge (poison ones are dead-lettered)."""
        try:
            await write_batch(engine, [event for _, event in events])
            return [entry_id for entry_id, _ in events]
        except POISON as exc:
            log.warning("an audit batch of %d was refused (%s); writing it event by event", len(events), exc)
        done = []
        for entry_id, event in events:
            try:
                await write_batch(engine, [event])
            except POISON as exc:
                error = f"audit row refused: {type(exc.orig).__name__}: {exc.orig}"
                await asyncio.to_thread(self.consumer.dead_letter, entry_id, event.to_wire(), error)
                continue
            done.append(entry_id)
        return done

    def _read(self) -> list[replies.Entry]:
        """Entries another writer left unacknowledged first (it died), then new ones."""
        _, claimed, _ = self.client.xautoclaim(
            self.consumer.stream,
            DISPATCH_GROUP,
            self.consumer.consumer,
            min_idle_time=self.settings.dispatch_claim_idle_ms,
            start_id="0-0",
            count=BATCH,
        )
        # Our own pending entries (a batch whose write failed) come back before new ones.
        own = self.client.xreadgroup(
            DISPATCH_GROUP, self.consumer.consumer, {self.consumer.stream: "0"}, count=BATCH
        )
        pending = [entry for _, entries in replies.streams(own) for entry in entries if entry[1]]
        if claimed or pending:
            return [*claimed, *pending]
        fresh = self.client.xreadgroup(
            DISPATCH_GROUP, self.consumer.consumer, {self.consumer.stream: ">"}, count=BATCH, block=1000
        )
        return [entry for _, entries in replies.streams(fresh) for entry in entries]

    def _parse(self, entries: list[replies.Entry]) -> list[tuple[str, Event]]:
        events: list[tuple[str, Event]] = []
        for entry_id, fields in entries:
            raw = fields.get(FIELD, "")
            try:
                event = Event.from_wire(raw)
            except (ValueError, ValidationError) as exc:
                self.consumer.dead_letter(entry_id, raw, f"unparseable envelope: {exc}")
                continue
            if event.type != EventType.AUDIT_RECORDED:
                self.consumer.dead_letter(entry_id, raw, f"{event.type} is not an audit event")
                continue
            events.append((entry_id, event))
        return events
