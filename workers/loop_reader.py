"""The tools work stream's new entries, read on the worker's event loop, where the direct lane runs them.

A dispatcher thread that read them handed each waited-on call over to the loop: a thread wake-up,
a ``call_soon_threadsafe`` and the GIL's hand-over (~1.5 ms one call at a time in round 5), plus its
blocking client's read and ack (~0.75 ms of CPU per call) beside the loop's own work. Here the read,
the start of the call and the ack happen on the loop, and a read's acknowledgements go with the
next read, in one round trip.

Only that path lives here. An entry that is not a direct-lane call, or does not parse, goes to the
stream's ``StreamConsumer`` (in a thread), which enqueues, dead-letters or counts it as it does its
own; that consumer's thread only reclaims stale entries and trims (``read_new`` off).

At least once, as the dispatcher thread: an entry is acknowledged after its call has started (a
worker that dies before the acknowledgement leaves it to be reclaimed), and never held
unacknowledged while the reader waits for a free slot or for a hand-over to the thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from events import replies, wire
from events.connection import dedicated_redis
from events.consumer import StreamConsumer, lost_group
from events.envelope import Event
from events.streams import FIELD

if TYPE_CHECKING:
    from workers.dispatcher import DirectLane

log = logging.getLogger(__name__)


@dataclass
class LoopReader:
    consumer: StreamConsumer
    lane: DirectLane
    # Started entries whose acknowledgement has not been sent yet.
    _acks: list[str] = field(default_factory=list, init=False, repr=False)

    async def run(self, redis_url: str, stop: threading.Event) -> None:
        """Reads until ``stop`` is set; a connection of its own, as the read blocks."""
        client = dedicated_redis(redis_url)
        try:
            while not stop.is_set():
                try:
                    await asyncio.to_thread(self.consumer.ensure_group)
                    while not stop.is_set():
                        await self.poll_once(client)
                except (ConnectionError, TimeoutError) as exc:
                    log.warning("loop reader of %s lost Redis, retrying: %s", self.consumer.stream, exc)
                    await asyncio.sleep(1.0)
                except ResponseError as exc:
                    if not lost_group(exc):
                        raise
                    log.warning("consumer group of %s is gone, recreating it", self.consumer.stream)
            await self._ack(client)
        finally:
            await client.aclose()

    async def poll_once(self, client: redis.asyncio.Redis) -> int:
        """Acknowledges what was started, reads new entries (blocking up to the consumer's
        ``block_ms``) and starts or hands over each; returns how many were read."""
        c = self.consumer
        async with client.pipeline(transaction=False) as pipe:
            self._queue_ack(pipe)
            pipe.xreadgroup(c.group, c.consumer, {c.stream: ">"}, count=c.batch, block=c.block_ms)
            # Replies read by one hiredis reader (events/wire.py), not redis-py's reply by reply
            # (412-465 -> 289-329 us of CPU a poll).
            answers = await wire.execute_blocking(pipe, c.block_ms)
        self._acks.clear()
        read = 0
        for _, entries in replies.streams(answers[-1]):
            for entry_id, fields in entries:
                await self._handle(client, entry_id, fields)
                read += 1
        if self._acks:
            # The calls just started go first, as far as their upstream request, before this
            # reader's acknowledgement and next read: they are what somebody waits on.
            await asyncio.sleep(0)
        return read

    async def _handle(self, client: redis.asyncio.Redis, entry_id: str, fields: dict[str, str]) -> None:
        wire = fields.get(FIELD, "")
        try:
            event: Event | None = Event.from_wire(wire)
        except ValueError:
            event = None
        if event is not None and self.lane.takes(event):
            if self.lane.full:
                await self._ack(client)
            await self.lane.start(event, wire)
            self._acks.append(entry_id)
            return
        await self._ack(client)
        await asyncio.to_thread(self.consumer.handle, entry_id, fields, 1)

    async def _ack(self, client: redis.asyncio.Redis) -> None:
        if not self._acks:
            return
        async with client.pipeline(transaction=False) as pipe:
            self._queue_ack(pipe)
            await pipe.execute()
        self._acks.clear()

    def _queue_ack(self, pipe: redis.asyncio.client.Pipeline) -> None:
        if self._acks:
            pipe.xack(self.consumer.stream, self.consumer.group, *self._acks)
            self.consumer.counted(pipe, "acked", len(self._acks))
