"""The tools stream read on the event loop (workers/loop_reader.py) over the real Redis: a waited-on
call starts on the loop and is acknowledged after it started, other entries take the dispatcher's
own path, nothing started waits unacknowledged for a slot, and an entry a dead worker read is
reclaimed by the stream's dispatcher thread and run on the loop."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
import redis.asyncio
from dramatiq.asyncio import EventLoopThread, set_event_loop_thread
from dramatiq.brokers.stub import StubBroker

from events.consumer import StreamConsumer
from events.envelope import Event, EventType
from events.streams import DISPATCH_GROUP, FIELD, Names, WorkKind
from schemas.settings import Settings
from tests.waiting import until
from workers.context import WorkerContext, set_context
from workers.dispatcher import DirectLane
from workers.event_context import current_event
from workers.loop_reader import LoopReader


class Calls:
    """A stand-in tool call: records the event it was started with, then waits for ``release``."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = threading.Event()

    async def __call__(self, envelope: str) -> None:
        self.started.append(current_event().id)
        while not self.release.is_set():
            await asyncio.sleep(0.01)


@pytest.fixture
def context(redis_url: str, redis_prefix: str) -> WorkerContext:
    settings = Settings(
        _env_file=None,
        environment="test",
        jwt_secret="x" * 32,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
    )
    made = WorkerContext(settings)
    set_context(made)
    return made


def lane(calls: Calls, enqueued: list[Event], slots: int) -> DirectLane:
    async def call_tool(envelope: str) -> None:
        await calls(envelope)

    actor = dramatiq.actor(call_tool, broker=StubBroker(), queue_name="tools", actor_name="call_tool")
    return DirectLane(enqueued.append, {EventType.TOOL_CALL_REQUESTED: actor}, slots)


def consumer(client: redis.Redis, names: Names, handler: DirectLane, name: str, **kw: int) -> StreamConsumer:
    made = StreamConsumer(
        client,
        names,
        names.work(WorkKind.TOOLS),
        DISPATCH_GROUP,
        name,
        handler,
        block_ms=50,
        read_new=False,
        **kw,
    )
    made.ensure_group()
    return made


def call(reply: bool = True) -> Event:
    return Event(
        type=EventType.TOOL_CALL_REQUESTED,
        org_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        payload={"config_id": str(uuid.uuid4()), "tool": "echo", "arguments": {}, "reply": reply},
    )


async def durations_recorded(client: redis.asyncio.Redis, names: Names) -> bool:
    """Whether the direct lane's batch of run durations reached the metrics."""
    return any(json.loads(f)[0] == "actor_duration_seconds" for f in await client.hkeys(names.metrics()))


def pending(client: redis.Redis, stream: str) -> list[str]:
    return [
        p["message_id"] for p in client.xpending_range(stream, DISPATCH_GROUP, min="-", max="+", count=10)
    ]


async def test_a_waited_on_call_starts_on_the_loop_and_is_acknowledged_after(
    context: WorkerContext, sync_redis: redis.Redis, names: Names, aredis: redis.asyncio.Redis
) -> None:
    calls, enqueued = Calls(), list[Event]()
    four = lane(calls, enqueued, 4)
    reader = LoopReader(consumer(sync_redis, names, four, "loop"), four)
    stream = reader.consumer.stream
    waited, queued = call(), call(reply=False)
    sync_redis.xadd(stream, {FIELD: '{"type": "tool_call.requested"'})
    ids = [sync_redis.xadd(stream, {FIELD: e.to_wire()}) for e in (queued, waited)]
    assert await reader.poll_once(aredis) == 3
    await until(lambda: calls.started == [waited.id], 5, "the call started with its event")
    # The call not waited on went to Dramatiq, the unparseable entry to the dead letters, both
    # acknowledged by the dispatcher's own path; the started call is acknowledged with the next read.
    assert [e.id for e in enqueued] == [queued.id]
    (dead,) = sync_redis.xrange(names.dead_letter())
    assert "unparseable" in json.loads(dead[1][FIELD])["error"]
    assert pending(sync_redis, stream) == [ids[1]]
    assert await reader.poll_once(aredis) == 0
    assert pending(sync_redis, stream) == []
    calls.release.set()
    await until(lambda: durations_recorded(aredis, names), 5, "the run's duration was recorded")


async def test_nothing_started_waits_unacknowledged_for_a_slot(
    context: WorkerContext, sync_redis: redis.Redis, names: Names, aredis: redis.asyncio.Redis
) -> None:
    calls, enqueued = Calls(), list[Event]()
    one = lane(calls, enqueued, 1)
    reader = LoopReader(consumer(sync_redis, names, one, "loop"), one)
    stream = reader.consumer.stream
    first, second = call(), call()
    ids = [sync_redis.xadd(stream, {FIELD: e.to_wire()}) for e in (first, second)]
    polling = asyncio.create_task(reader.poll_once(aredis))
    # The second waits for the only slot; the first, started, is acknowledged meanwhile.
    await until(lambda: pending(sync_redis, stream) == [ids[1]], 5, "the first call was acknowledged")
    assert calls.started == [first.id] and not polling.done()
    calls.release.set()
    assert await polling == 2
    assert calls.started == [first.id, second.id]
    await reader.poll_once(aredis)
    assert pending(sync_redis, stream) == []
    await until(lambda: durations_recorded(aredis, names), 5, "the runs' durations were recorded")


@pytest.fixture
def loop_thread() -> Iterator[EventLoopThread]:
    thread = EventLoopThread(logging.getLogger(__name__))
    thread.start(timeout=5)
    set_event_loop_thread(thread)
    try:
        yield thread
    finally:
        set_event_loop_thread(None)
        thread.stop()


def test_an_entry_a_dead_worker_read_is_reclaimed_and_run_on_the_loop(
    context: WorkerContext, sync_redis: redis.Redis, names: Names, loop_thread: EventLoopThread
) -> None:
    calls, enqueued = Calls(), list[Event]()
    calls.release.set()
    alive = consumer(sync_redis, names, lane(calls, enqueued, 2), "alive", claim_idle_ms=0)
    event = call()
    entry_id = sync_redis.xadd(alive.stream, {FIELD: event.to_wire()})
    # A worker's loop reader read it and died before acknowledging it.
    sync_redis.xreadgroup(DISPATCH_GROUP, "dead", {alive.stream: ">"}, count=1)
    assert pending(sync_redis, alive.stream) == [entry_id]
    # The reclaim-only consumer never reads new entries itself.
    fresh = sync_redis.xadd(alive.stream, {FIELD: call().to_wire()})
    assert alive.poll_once() == 1
    assert calls.started == [event.id]
    assert pending(sync_redis, alive.stream) == []
    assert sync_redis.xinfo_groups(alive.stream)[0]["lag"] == 1, f"{fresh} is left to the loop reader"
