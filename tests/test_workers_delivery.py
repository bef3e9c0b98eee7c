"""A real worker process: a duplicated session request starts one host; work a killed dispatcher
read is finished by another process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid

import redis.asyncio

from events.envelope import Event, EventType
from events.publisher import publish
from events.results import read_log
from events.streams import DISPATCH_GROUP, FIELD, Names, WorkKind
from tests.fixtures.stack import Stack
from tests.waiting import until


async def started(client: redis.asyncio.Redis, names: Names, session_id: uuid.UUID) -> list[Event]:
    events = [Event.from_wire(raw) for _, raw in await read_log(client, names, session_id)]
    return [e for e in events if e.type is EventType.SESSION_STARTED]


async def wait_started(client: redis.asyncio.Redis, names: Names, session_id: uuid.UUID) -> list[Event]:
    for _ in range(600):
        if found := await started(client, names, session_id):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("the session never started")


async def skipped(client: redis.asyncio.Redis, names: Names) -> bool:
    """Whether a worker has skipped a message as a duplicate (its actor metrics say so)."""
    for field in await client.hkeys(names.metrics()):
        name, labels = json.loads(field)
        if name == "actor_duration_seconds" and dict(labels).get("outcome") == "skipped":
            return True
    return False


async def create_session(stack: Stack) -> uuid.UUID:
    import httpx

    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.post(
            "/api/v1/sessions",
            json={"agent_type": "custom", "custom_agent": "echo", "prompt": "once"},
            headers=stack.headers(),
        )
    assert response.status_code == 202
    return uuid.UUID(response.json()["id"])


async def test_a_duplicated_event_has_one_effect(stack: Stack) -> None:
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    client = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    try:
        session_id = await create_session(stack)
        await wait_started(client, names, session_id)
        # Delivered again, as at-least-once delivery may: the very same envelope, the same event id.
        entries = await client.xrange(names.work(WorkKind.SESSIONS))
        (raw,) = [
            fields[FIELD] for _, fields in entries if Event.from_wire(fields[FIELD]).session_id == session_id
        ]
        original = Event.from_wire(raw)
        await publish(client, names, original)
        await until(lambda: skipped(client, names), 30, "the worker skipped the duplicate")
        assert len(await started(client, names, session_id)) == 1, "the duplicate started no second host"
        assert not await client.xrange(names.dead_letter())
    finally:
        await client.aclose()


async def test_work_read_by_a_killed_worker_is_finished_by_another(stack: Stack) -> None:
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    client = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    stream = names.work(WorkKind.SESSIONS)
    try:
        for proc in stack.workers:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stack.workers.clear()
        session_id = await create_session(stack)
        # A consumer that read the entry and died without acknowledging it.
        await client.xreadgroup(DISPATCH_GROUP, "crashed-consumer", {stream: ">"}, count=10)
        assert (await client.xpending(stream, DISPATCH_GROUP))["pending"] >= 1
        stack.start_worker("sessions")
        # Reclaimed once idle past the claim window, then handled.
        assert len(await asyncio.wait_for(wait_started(client, names, session_id), 60)) == 1
    finally:
        await client.aclose()
