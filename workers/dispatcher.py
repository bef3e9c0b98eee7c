"""Moves work-stream events onto Dramatiq queues, at least once: ack only after the enqueue."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Coroutine
from concurrent.futures import Future
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
    CPU. The trade-off: the stream entry is acknowledged once the request is handed to the event
    loop, as it is once enqueued, but the request then lives only in this process. If the worker
    dies with it in hand, it is not redelivered (Dramatiq would run it again after the heartbeat
    timeout and the idempotency lease), and the caller's wait ends without an answer. For a tool
    call that is the better failure: tool calls are not idempotent on the server's side (they are
    never retried), and the caller that gave up would not read a late answer. The tools worker
    audits every call it answers and the gateway audits the calls that got no answer, so no call
    goes unrecorded.

    At most ``slots`` requests run at once; a full lane stops this dispatcher reading, leaving the
    stream's next entries to the other workers' dispatchers.
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
        self.slots = threading.BoundedSemaphore(slots)

    def __call__(self, event: Event) -> None:
        handler = self.handlers.get(event.type)
        loop_thread = get_event_loop_thread()
        if handler is None or loop_thread is None or not event.payload.get("reply"):
            self.enqueue(event)
            return
        self.slots.acquire()
        try:
            # The actor reads its event from the context Dramatiq's EventContext middleware would set.
            with handling(event):
                running = asyncio.run_coroutine_threadsafe(self._timed(*handler, event), loop_thread.loop)
        except BaseException:
            self.slots.release()
            raise
        running.add_done_callback(partial(self._done, event))

    async def _timed(
        self, actor: str, handler: Callable[[str], Coroutine[Any, Any, None]], event: Event
    ) -> None:
        """The handler, timed into the same histogram as a Dramatiq run (``ActorMetrics``)."""
        started, outcome = time.monotonic(), "failed"
        try:
            await handler(event.to_wire())
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

    def _done(self, event: Event, running: Future[None]) -> None:
        self.slots.release()
        if not running.cancelled() and running.exception() is not None:
            log.error("%s %s failed in the direct lane", event.type, event.id, exc_info=running.exception())


def dispatchers(
    client: redis.Redis,
    names: Names,
    broker: Broker,
    actors: dict[EventType, Actor],
    kinds: Collection[WorkKind],
    claim_idle_ms: int,
    direct_slots: int = 0,
) -> list[StreamConsumer]:
    """One consumer per work stream; with ``direct_slots``, waited-on tool calls take the direct lane."""
    routed = {t: a for t, a in actors.items() if WORK_ROUTES.get(t) in kinds}
    enqueue = enqueuer(broker, routed)
    direct = {t: a for t, a in routed.items() if WORK_ROUTES[t] is WorkKind.TOOLS}
    handler = DirectLane(enqueue, direct, direct_slots) if direct and direct_slots else enqueue
    name = consumer_name()
    return [
        StreamConsumer(
            client, names, names.work(kind), DISPATCH_GROUP, name, handler, claim_idle_ms=claim_idle_ms
        )
        for kind in kinds
    ]
