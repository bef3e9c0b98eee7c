"""Moves work-stream events onto Dramatiq queues, at least once: ack only after the enqueue."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import redis
from dramatiq import Actor, Broker, Message
from dramatiq.asyncio import get_event_loop_thread
from redis.exceptions import RedisError

from events.consumer import PoisonEvent, StreamConsumer
from events.envelope import Event, EventType, utcnow
from events.metrics import Increments
from events.streams import DISPATCH_GROUP, WORK_ROUTES, Names, WorkKind
from workers.actor_metrics import record_duration
from workers.context import current
from workers.event_context import handling
from workers.loop_reader import LoopReader

log = logging.getLogger(__name__)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# How long the direct lane's run durations wait to be recorded together.
DURATIONS_BATCH_SECONDS = 0.25

# Dramatiq's Redis broker refuses delays of 7 days or more; later work is handed over in steps.
MAX_DELAY_MS = 7 * 24 * 3600 * 1000 - 60_000


def delay_ms(event: Event) -> int | None:
    """Events carrying ``not_before`` (ISO time) wait on Dramatiq's delay queue until then."""
    raw = event.payload.get("not_before")
    if not raw:
        return None
    try:
        wait = (datetime.fromisoformat(str(raw)) - utcnow()).total_seconds()
    except (TypeError, ValueError) as exc:
        raise PoisonEvent(f"not_before is not an ISO time: {raw!r}") from exc
    return min(max(int(wait * 1000), 0), MAX_DELAY_MS) or None


def enqueuer(broker: Broker, actors: dict[EventType, Actor]):
    def enqueue(event: Event) -> None:
        actor = actors.get(event.type)
        if actor is None:
            raise PoisonEvent(f"no actor handles {event.type}")
        # The message id is the event id, so the idempotency middleware recognises duplicates.
        broker.enqueue(
            Message(
                queue_name=actor.queue_name,
                actor_name=actor.actor_name,
                args=(event.to_wire(),),
                kwargs={},
                options={},
                message_id=event.id,
            ),
            delay=delay_ms(event),
        )

    return enqueue


class DirectLane:
    """Runs the requests a caller is waiting on (``reply`` set: the MCP gateway's tool calls) in
    this process, skipping Dramatiq's queue; everything else is enqueued as usual.

    The hop it skips (the enqueue, a worker thread's fetch, the idempotency lease, the ack) cost the
    gateway's caller a few milliseconds per call and, under concurrency, most of the tools worker's
    CPU. The trade-off: the stream entry is acknowledged once the request has started on the event
    loop, as it is once enqueued, but the request then lives only in this process. If the worker
    dies with it in hand, it is not redelivered (Dramatiq would run it again after the heartbeat
    timeout and the idempotency lease), and the caller's wait ends without an answer. For a tool
    call that is the better failure: tool calls are not idempotent on the server's side (they are
    never retried), and the caller that gave up would not read a late answer. The tools worker
    audits every call it answers and the gateway audits the calls that got no answer, so no call
    goes unrecorded.

    New entries come from the loop's own reader (``workers/loop_reader.py``); reclaimed ones from
    the stream's dispatcher thread, through ``__call__``. At most ``slots`` requests run at once; a
    full lane stops its reader, leaving the stream's next entries to the other workers' readers.
    """

    def __init__(self, enqueue: Callable[[Event], None], actors: dict[EventType, Actor], slots: int) -> None:
        self.enqueue = enqueue
        # Run durations waiting for the next batch (touched only on the event loop's thread).
        self._durations = Increments()
        self._recorder: asyncio.Task[None] | None = None
        # The actors' names and own coroutine functions (Dramatiq wraps them to block a worker thread).
        self.handlers: dict[EventType, tuple[str, Callable[[str], Coroutine[Any, Any, None]]]] = {
            type_: (actor.actor_name, unwrapped)
            for type_, actor in actors.items()
            if inspect.iscoroutinefunction(unwrapped := inspect.unwrap(actor.fn))
        }
        # Taken and released on the event loop only.
        self.slots = asyncio.Semaphore(slots)
        # The running requests: the loop keeps only weak references to its tasks.
        self._running: set[asyncio.Task[None]] = set()

    def takes(self, event: Event) -> bool:
        return event.type in self.handlers and bool(event.payload.get("reply"))

    @property
    def full(self) -> bool:
        return self.slots.locked()

    async def start(self, event: Event, wire: str) -> None:
        """Starts ``event``'s handler on this event loop once a slot is free (``takes(event)``);
        ``wire``: the envelope as read, what a Dramatiq message would carry."""
        actor, handler = self.handlers[event.type]
        await self.slots.acquire()
        # The actor reads its event from the context Dramatiq's EventContext middleware would set;
        # the task starts with a copy of it.
        with handling(event):
            running = asyncio.create_task(self._timed(actor, handler, wire))
        self._running.add(running)
        running.add_done_callback(partial(self._done, event))

    def __call__(self, event: Event) -> None:
        """A dispatcher thread's entry (one it reclaimed): started on the event loop, or enqueued."""
        loop_thread = get_event_loop_thread()
        if loop_thread is None or not self.takes(event):
            self.enqueue(event)
            return
        asyncio.run_coroutine_threadsafe(self.start(event, event.to_wire()), loop_thread.loop).result()

    async def _timed(
        self, actor: str, handler: Callable[[str], Coroutine[Any, Any, None]], wire: str
    ) -> None:
        """The handler, timed into the same histogram as a Dramatiq run (``ActorMetrics``)."""
        started, outcome = time.monotonic(), "failed"
        try:
            await handler(wire)
            outcome = "ok"
        finally:
            context = current()
            record_duration(self._durations, context.names, actor, time.monotonic() - started, outcome)
            if self._recorder is None or self._recorder.done():
                self._recorder = asyncio.create_task(self._record(), name="direct-lane-durations")

    async def _record(self) -> None:
        """The durations of the runs of the last ``DURATIONS_BATCH_SECONDS``, added up, in one round
        trip: a pipeline per run (a dozen bucket increments) was a Redis round trip in eight per
        gateway call, and ~8 % of the event loop's busy time under load. A worker that dies loses
        that much of the histogram."""
        await asyncio.sleep(DURATIONS_BATCH_SECONDS)
        durations, self._durations = self._durations, Increments()
        context = current()
        try:
            async with context.redis.pipeline(transaction=False) as pipe:
                durations.write(pipe)
                await pipe.execute()
        except RedisError as exc:
            log.warning("could not record the durations of direct runs: %s", exc)

    def _done(self, event: Event, running: asyncio.Task[None]) -> None:
        self._running.discard(running)
        self.slots.release()
        if not running.cancelled() and running.exception() is not None:
            log.error("%s %s failed in the direct lane", event.type, event.id, exc_info=running.exception())


@dataclass
class Dispatch:
    # Each run in a thread of its own.
    consumers: list[StreamConsumer]
    # Each run on Dramatiq's event loop, once the worker has started it.
    readers: list[LoopReader]


def dispatchers(
    client: redis.Redis,
    names: Names,
    broker: Broker,
    actors: dict[EventType, Actor],
    kinds: Collection[WorkKind],
    claim_idle_ms: int,
    direct_slots: int = 0,
) -> Dispatch:
    """One consumer per work stream; with ``direct_slots``, waited-on tool calls take the direct
    lane, and the tools stream's new entries are read on the event loop that runs them."""
    routed = {t: a for t, a in actors.items() if WORK_ROUTES.get(t) in kinds}
    enqueue = enqueuer(broker, routed)
    direct = {t: a for t, a in routed.items() if WORK_ROUTES[t] is WorkKind.TOOLS}
    lane = DirectLane(enqueue, direct, direct_slots) if direct and direct_slots else None
    name = consumer_name()
    consumers = [
        StreamConsumer(
            client,
            names,
            names.work(kind),
            DISPATCH_GROUP,
            name,
            lane or enqueue,
            claim_idle_ms=claim_idle_ms,
            read_new=lane is None or kind is not WorkKind.TOOLS,
        )
        for kind in kinds
    ]
    readers = [LoopReader(c, lane) for c in consumers if lane is not None and not c.read_new]
    return Dispatch(consumers, readers)
