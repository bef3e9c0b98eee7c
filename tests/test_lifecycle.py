"""Sessions tell the truth: their status right after a message, after they end, and after their
host and Redis are lost (the whole stack as processes on real PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid

import httpx
import pytest
import redis

from tests.fixtures.redis import delete_prefixed
from tests.fixtures.stack import Stack, seed_async
from tests.test_skeleton_e2e import ECHO, named, read_events

pytestmark = pytest.mark.timeout(240)

STACK_ENV = {
    "AGENTAPI_AGENT_SETTLE_SECONDS": "0.3",
    "AGENTAPI_SESSION_HOST_LOST_SECONDS": "3",
    "AGENTAPI_RECONCILE_INTERVAL_SECONDS": "0.5",
}


async def wait_status(
    client: httpx.AsyncClient, base: str, headers: dict[str, str], want: str = "stable"
) -> dict[str, object]:
    # Generous: on a machine shared by many test runs a worker can take half a minute to start.
    for _ in range(2400):
        status = (await client.get(f"{base}/status", headers=headers)).json()
        if status["status"] == want:
            return status  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{base} never read {want}")


async def start_echo(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """An echo agent's session, once it reads stable: its URL."""
    created = (await client.post("/api/v1/sessions", json=ECHO, headers=headers)).json()
    base = f"/api/v1/sessions/{created['id']}"
    await wait_status(client, base, headers)
    return base


async def test_status_is_running_right_after_every_message(stack: Stack) -> None:
    """The race: 100 times (POST /message, then at once GET /status) reads running every time."""
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (await client.post("/api/v1/sessions", json=ECHO, headers=headers)).json()
        base = f"/api/v1/sessions/{created['id']}"
        seen, busy = [], 0
        for number in range(100):
            while True:
                await wait_status(client, base, headers)
                sent = await client.post(f"{base}/message", json={"content": f"n{number}"}, headers=headers)
                # On a loaded machine the echo agent can pause longer than the 0.3 s settle window
                # mid-reply, and a client may see stable then 409: honest, but counted.
                if sent.status_code != 409:
                    break
                busy += 1
            assert sent.status_code == 200, sent.text
            seen.append((await client.get(f"{base}/status", headers=headers)).json()["status"])
        print(f"100 messages, each followed by GET /status: {seen.count('running')} running; {busy} 409s")
        assert seen == ["running"] * 100
        await wait_status(client, base, headers)
        messages = (await client.get(f"{base}/messages", headers=headers)).json()["messages"]
        assert [m["content"] for m in messages[2::2]] == [f"echo: n{n}" for n in range(100)]
        await client.delete(base, headers=headers)


async def test_concurrent_messages_start_one_turn(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        base = await start_echo(client, headers)
        answers = await asyncio.gather(
            *(
                client.post(f"{base}/message", json={"content": f"racer {n}"}, headers=headers)
                for n in range(10)
            )
        )
        assert sorted(a.status_code for a in answers) == [200] + [409] * 9
        await wait_status(client, base, headers)
        messages = (await client.get(f"{base}/messages", headers=headers)).json()["messages"]
        assert [m["role"] for m in messages] == ["agent", "user", "agent"]
        await client.delete(base, headers=headers)


async def test_an_ended_session_reads_stable_and_refuses_messages(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (await client.post("/api/v1/sessions", json=ECHO, headers=headers)).json()
        base = f"/api/v1/sessions/{created['id']}"
        live = await wait_status(client, base, headers)
        assert live["backend"] == live["transport"] == "pty"
        assert live["detail"] == "waiting_for_input"
        stopping = await client.delete(base, headers=headers)
        assert stopping.status_code == 202
        assert stopping.json()["id"] == created["id"]
        await read_events(client, f"{base}/events", headers, until=named("session_ended"))
        for _ in range(100):
            status = (await client.get(f"{base}/status", headers=headers)).json()
            if status["session_status"] == "ended":
                break
            await asyncio.sleep(0.05)
        assert status == {
            "status": "stable",
            "agent_type": "custom",
            "transport": "pty",
            "backend": "pty",
            "session_status": "ended",
            "detail": None,
            "end_reason": "stopped",
        }
        for kind in ("user", "raw"):
            refused = await client.post(
                f"{base}/message", json={"content": "hi", "type": kind}, headers=headers
            )
            assert refused.status_code == 410
            assert refused.headers["content-type"].startswith("application/problem+json")
            problem = refused.json()
            assert problem["end_reason"] == "stopped" and "ended" in problem["detail"]
        again = await client.delete(base, headers=headers)
        assert again.status_code == 200
        assert again.json()["status"] == "ended" and again.json()["end_reason"] == "stopped"


async def test_sessions_whose_host_and_redis_are_lost_end_and_free_the_quota(pg_urls, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    """The worker is killed and Redis loses everything (as the dev server's in-memory Redis does on
    a restart): DELETE ends a session at once, the reconciler ends the rest with host_lost, and
    the caller can create as many sessions as before."""
    org, user = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, org, user, "Lost Hosts Org")
    headers = stack.headers(org_id=org, user_id=user)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        ids = []
        for _ in range(3):  # the stack's per-user quota
            created = await client.post("/api/v1/sessions", json=ECHO, headers=headers)
            assert created.status_code == 202, created.text
            ids.append(created.json()["id"])
        for session_id in ids:
            await wait_status(client, f"/api/v1/sessions/{session_id}", headers)
        assert (await client.post("/api/v1/sessions", json=ECHO, headers=headers)).status_code == 429

        for worker in stack.workers:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        stack.workers.clear()
        wiped = redis.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"])
        delete_prefixed(wiped, stack.env["AGENTAPI_REDIS_PREFIX"])
        wiped.close()

        stopped = await client.delete(f"/api/v1/sessions/{ids[0]}", headers=headers)
        assert stopped.status_code == 200, stopped.text
        assert {k: stopped.json()[k] for k in ("status", "end_reason")} == {
            "status": "ended",
            "end_reason": "stopped",
        }

        stack.start_worker("sessions")
        for session_id in ids[1:]:
            base = f"/api/v1/sessions/{session_id}"
            status = await wait_status(client, base, headers)
            for _ in range(200):
                if status["session_status"] == "ended":
                    break
                await asyncio.sleep(0.1)
                status = (await client.get(f"{base}/status", headers=headers)).json()
            assert (status["session_status"], status["end_reason"]) == ("ended", "host_lost")
            assert (await client.delete(base, headers=headers)).status_code == 200
            events = await read_events(client, f"{base}/events", headers, until=named("session_ended"))
            assert json.loads(events[-1].data)["reason"] == "host_lost"

        fresh = []
        for _ in range(3):
            created = await client.post("/api/v1/sessions", json=ECHO, headers=headers)
            assert created.status_code == 202, created.text
            fresh.append(created.json()["id"])
        for session_id in fresh:
            await wait_status(client, f"/api/v1/sessions/{session_id}", headers)
            await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)


async def test_openapi_document_is_served_where_agentapi_clients_look(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        root = await client.get("/openapi.json")
        assert root.status_code == 200 and root.json()["openapi"].startswith("3.")
        assert "/api/v1/sessions/{session_id}/status" in root.json()["paths"]
        created = (await client.post("/api/v1/sessions", json=ECHO, headers=stack.headers())).json()
        base = f"/api/v1/sessions/{created['id']}"
        per_session = await client.get(f"{base}/openapi.json", headers=stack.headers())
        assert per_session.json() == root.json()
        assert (await client.get(f"{base}/openapi.json")).status_code == 401
        await client.delete(base, headers=stack.headers())


async def test_interrupt_stops_a_long_reply(stack: Stack) -> None:
    """A reply streamed over 30 s is cut by POST /interrupt (the echo agent honours Esc as Claude
    Code does); the call answers once the agent is stable again."""
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        base = await start_echo(client, headers)
        text = "a very long answer " * 10
        assert (
            await client.post(f"{base}/message", json={"content": f"/slow 30 {text}"}, headers=headers)
        ).is_success
        for _ in range(200):
            screen = (await client.get(f"{base}/internal/screen", headers=headers)).json()["screen"]
            if "echo: a very" in screen:
                break
            await asyncio.sleep(0.05)
        assert "echo: a very" in screen
        answer = await client.post(f"{base}/interrupt", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "stable"
        # When the output stopped: the last screen change seen over the screen stream.
        stopped = (await client.get(f"{base}/internal/screen", headers=headers)).json()["screen"]
        assert "^C interrupted" in stopped
        print(f"interrupt answered after {answer.json()['waited_seconds']} s (settle window 0.3 s)")
        messages = (await client.get(f"{base}/messages", headers=headers)).json()["messages"]
        assert "interrupted" in messages[-1]["content"] and text.strip() not in messages[-1]["content"]
        await client.delete(base, headers=headers)


async def test_internal_screen_as_json_and_as_a_stream(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        base = await start_echo(client, headers)
        snapshot = (await client.get(f"{base}/internal/screen", headers=headers)).json()
        assert "Echo Agent 1.0" in snapshot["screen"] and "esc to interrupt" in snapshot["screen"]
        screens = []
        async with client.stream(
            "GET", f"{base}/internal/screen", headers={**headers, "Accept": "text/event-stream"}
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "screen":
                    screens.append(json.loads(line[5:])["screen"])
                    if len(screens) == 1:
                        await client.post(f"{base}/message", json={"content": "on screen"}, headers=headers)
                    if "echo: on screen" in screens[-1]:
                        break
        assert "Echo Agent 1.0" in screens[0] and "echo: on screen" in screens[-1]
        await client.delete(base, headers=headers)
