"""The worker process hosting a session stops (kill -9, or SIGTERM): another worker takes it over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import psycopg
import pytest
import redis.asyncio

from events.payloads import RawKeys
from events.session_state import input_entry
from events.streams import Names
from tests.fixtures.stack import Stack
from tests.test_skeleton_e2e import ECHO, agent_said, named, read_events
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)
# A deaf agent's turn fails after this long (Enter pressed again at 3 s): 15 s by default.
STACK_ENV = {"AGENTAPI_AGENT_ENTER_TIMEOUT_SECONDS": "6"}


async def wait_stable(client: httpx.AsyncClient, base: str, headers: dict[str, str]) -> None:
    for _ in range(600):
        if (await client.get(f"{base}/status", headers=headers)).json()["status"] == "stable":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the agent never became stable")


@pytest.mark.parametrize("stop_with", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "graceful-stop"])
async def test_a_stopped_host_is_replaced_and_the_conversation_goes_on(stack: Stack, stop_with: int) -> None:
    """kill -9: the session is requeued once the dead worker's heartbeat lapses. SIGTERM: the
    host hands the session back to the queue itself and the worker exits cleanly."""
    stack.start_worker("sessions")
    headers = stack.headers()
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    store = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (
            await client.post("/api/v1/sessions", json={**ECHO, "prompt": "one"}, headers=headers)
        ).json()
        session_id, base = created["id"], f"/api/v1/sessions/{created['id']}"
        events = await read_events(client, f"{base}/events", headers, until=agent_said("echo: one"))
        await wait_stable(client, base, headers)

        host = (await store.hgetall(names.session_state(session_id)))["host"]
        host_pid = int(host.rsplit(":", 1)[1])
        victim = next(proc for proc in stack.workers if proc.pid == host_pid)
        os.killpg(victim.pid, stop_with)
        assert victim.wait(timeout=30) == (0 if stop_with == signal.SIGTERM else -signal.SIGKILL)
        killed_at = time.monotonic()
        recovered = await read_events(
            client,
            f"{base}/events",
            {**headers, "Last-Event-ID": events[-1].id},
            until=named("session_recovered"),
        )
        took = time.monotonic() - killed_at
        new_host = json.loads(recovered[-1].data)["worker"]
        assert new_host != host, "another worker process hosts the session"
        print(f"\nrecovered on {new_host} {took:.1f} s after signal {stop_with} to {host}")

        await wait_stable(client, base, headers)
        assert (
            await client.post(f"{base}/message", json={"content": "two"}, headers=headers)
        ).status_code == 200
        await read_events(
            client,
            f"{base}/events",
            {**headers, "Last-Event-ID": recovered[-1].id},
            until=agent_said("echo: two"),
        )
        await wait_stable(client, base, headers)

        inputs = [fields["content"] for _, fields in await store.xrange(names.session_input(session_id))]
        assert inputs == ["one", "two"], "each input once, in order"
        messages = (await client.get(f"{base}/messages", headers=headers)).json()["messages"]
        assert [m["content"] for m in messages if m["role"] == "user"] == ["one", "two"]
        replies = [
            m["content"] for m in messages if m["role"] == "agent" and m["content"].startswith("echo:")
        ]
        assert replies == ["echo: one", "echo: two"], "no message lost or answered twice"
        assert [m["id"] for m in messages] == list(range(len(messages)))
        await client.delete(base, headers=headers)
    await store.aclose()


# Enter is retried for 15 s before the turn fails.
@pytest.mark.timeout(120)
async def test_a_message_the_agent_never_takes_fails_its_turn_and_the_host_stays(stack: Stack) -> None:
    """The agent lives but stops reading its terminal: Enter is pressed again for 6 s, then that
    turn fails with an ``agent_error`` while the same host keeps the session (it used to crash the
    host, and Dramatiq hosted the session again, typing the message into a new agent)."""
    stack.start_worker("sessions")
    headers = stack.headers()
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    store = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (
            await client.post("/api/v1/sessions", json={**ECHO, "prompt": "/deaf"}, headers=headers)
        ).json()
        base = f"/api/v1/sessions/{created['id']}"
        events = await read_events(client, f"{base}/events", headers, until=agent_said("not listening"))
        await wait_stable(client, base, headers)
        host = (await store.hgetall(names.session_state(created["id"])))["host"]

        sent = await client.post(f"{base}/message", json={"content": "anyone there?"}, headers=headers)
        assert sent.status_code == 200
        after = await read_events(
            client, f"{base}/events", {**headers, "Last-Event-ID": events[-1].id}, until=named("agent_error")
        )
        error = json.loads(after[-1].data)
        assert error["level"] == "error" and "did not react" in error["message"]
        assert "session_recovered" not in [sse.event for sse in after]

        await wait_stable(client, base, headers)
        assert (await store.hgetall(names.session_state(created["id"])))["host"] == host
        status = (await client.get(f"{base}/status", headers=headers)).json()
        assert status["session_status"] in ("running", "stable"), "the session is still live"


async def test_a_run_of_raw_keys_leaves_the_cursor_after_its_last_key(stack: Stack) -> None:
    """Keys already read are handled before the cursor is stored, once for the run: it ends after
    the last of them, so a recovering host retypes none."""
    headers = stack.headers()
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    store = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    owner = stack.env["AGENTAPI_MIGRATIONS_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")

    def cursor(session_id: str) -> str | None:
        with psycopg.connect(owner) as db:
            row = db.execute(
                "SELECT last_input_id FROM user_sessions WHERE id = %s", (session_id,)
            ).fetchone()
        return row[0] if row else None

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (await client.post("/api/v1/sessions", json=ECHO, headers=headers)).json()
        session_id, base = created["id"], f"/api/v1/sessions/{created['id']}"
        await wait_stable(client, base, headers)
        async with store.pipeline(transaction=False) as keys:
            for _ in range(40):
                keys.xadd(*input_entry(names, session_id, RawKeys(content="x")))
            last = (await keys.execute())[-1]

        async def stored() -> bool:
            return await asyncio.to_thread(cursor, session_id) == last

        await until(stored, 20, "the cursor is after the last key")
        screen = await read_events(
            client, f"{base}/internal/screen", headers, until=lambda e: "x" * 40 in e.data
        )
        assert "x" * 41 not in screen[-1].data, "each key typed once"
        await client.delete(base, headers=headers)
    await store.aclose()
