"""HTTP → Redis stream → Dramatiq PTY host in another process → event log + pub/sub → SSE."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

import httpx
import pytest
import redis.asyncio
from httpx_sse import ServerSentEvent, aconnect_sse

from events.streams import Names
from tests.fixtures.stack import Stack, seed_async

pytestmark = pytest.mark.timeout(120)
Until = Callable[[ServerSentEvent], bool]
ECHO = {"agent_type": "custom", "custom_agent": "echo"}


def agent_said(text: str) -> Until:
    def match(sse: ServerSentEvent) -> bool:
        if sse.event != "message_update":
            return False
        data = json.loads(sse.data)
        return data["role"] == "agent" and data["message"] == text and data["type"] == "message.completed"

    return match


def named(name: str) -> Until:
    return lambda sse: sse.event == name


async def read_events(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], until: Until, limit: int = 500
) -> list[ServerSentEvent]:
    """SSE events up to and including the first that matches ``until``; data-less frames (the
    connection's ``retry:`` hint) are not events for a browser either, so they are skipped."""
    seen: list[ServerSentEvent] = []
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            seen.append(sse)
            if until(sse) or len(seen) >= limit:
                break
    return seen


def stream_key(stream_id: str) -> tuple[int, ...]:
    return tuple(map(int, stream_id.split("-")))


async def test_session_round_trip_and_replay(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/sessions",
            json={**ECHO, "prompt": "hello from the skeleton"},
            headers={**headers, "X-Correlation-ID": "corr-e2e-1"},
        )
        assert created.status_code == 202, created.text
        body = created.json()
        assert body["status"] == "requested"
        assert len(body["event_id"]) == 26
        url = body["events_url"]

        first = await read_events(client, url, headers, until=agent_said("echo: hello from the skeleton"))
        assert first[0].event == "session_started"
        assert json.loads(first[0].data)["worker"], "the worker names its host:pid"
        assert all(json.loads(sse.data)["correlation_id"] == "corr-e2e-1" for sse in first)
        # The worker's own log line about this work carries the request's correlation id.
        assert any(
            record["logger"] == "workers.session_host"
            and record["component"] == "worker"
            and record["correlation_id"] == "corr-e2e-1"
            and record["message"].startswith("hosting session")
            for record in stack.log_records()
        )
        user_messages = [json.loads(s.data) for s in first if s.event == "message_update"]
        assert {"role": "user", "message": "hello from the skeleton"}.items() <= next(
            m for m in user_messages if m["role"] == "user"
        ).items()
        statuses = [json.loads(s.data)["status"] for s in first if s.event == "status_change"]
        assert "running" in statuses and statuses[-1] == "stable"
        ids = [sse.id for sse in first]
        assert all(ids) and ids == sorted(ids, key=stream_key)

        # Reconnect after the first event: only what was missed comes back, nothing twice.
        replay = await read_events(
            client, url, {**headers, "Last-Event-ID": ids[0]}, until=lambda sse: sse.id == ids[-1]
        )
        assert [sse.id for sse in replay] == ids[1:]
        assert [sse.event for sse in replay] == [sse.event for sse in first[1:]]

        stopped = await client.delete(f"/api/v1/sessions/{body['id']}", headers=headers)
        assert stopped.status_code == 202
        ended = await read_events(
            client, url, {**headers, "Last-Event-ID": ids[-1]}, until=named("session_ended")
        )
        assert json.loads(ended[-1].data)["reason"] == "stopped"

    # The ended session's Redis keys go after AGENTAPI_SESSION_KEYS_TTL_SECONDS (a day by default).
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    store = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"])
    try:
        for key in (names.session_input(body["id"]), names.session_log(body["id"])):
            for _ in range(100):
                if await store.ttl(key) > 0:
                    break
                await asyncio.sleep(0.05)
            assert 0 < await store.ttl(key) <= 86_400, key
    finally:
        await store.aclose()


async def test_agentapi_compatible_endpoints(stack: Stack) -> None:
    """20 messages in a row over the agentapi-style API: each answered, order kept, and every
    answer seen over SSE as running → stable."""
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (await client.post("/api/v1/sessions", json=ECHO, headers=headers)).json()
        base = f"/api/v1/sessions/{created['id']}"
        last: str | None = None
        for number in range(20):
            for _ in range(200):
                status = (await client.get(f"{base}/status", headers=headers)).json()
                if status["status"] == "stable":
                    break
                await asyncio.sleep(0.05)
            # session_status is the stored lifecycle, which follows the live status a moment later.
            assert {k: status[k] for k in ("status", "agent_type", "transport")} == {
                "status": "stable",
                "agent_type": "custom",
                "transport": "pty",
            }
            sent = await client.post(f"{base}/message", json={"content": f"number {number}"}, headers=headers)
            assert sent.json() == {"ok": True}
            extra = {"Last-Event-ID": last} if last else {}
            events = await read_events(
                client, f"{base}/events", {**headers, **extra}, until=agent_said(f"echo: number {number}")
            )
            last = events[-1].id
            statuses = [json.loads(e.data)["status"] for e in events if e.event == "status_change"]
            assert "running" in statuses and statuses[-1] == "stable", statuses
        messages = (await client.get(f"{base}/messages", headers=headers)).json()["messages"]
        assert [m["id"] for m in messages] == list(range(41))
        assert [m["content"] for m in messages[1::2]] == [f"number {n}" for n in range(20)]
        assert [m["content"] for m in messages[2::2]] == [f"echo: number {n}" for n in range(20)]
        assert messages[0]["role"] == "agent" and "Echo Agent" in messages[0]["content"]
        await client.delete(base, headers=headers)


async def test_busy_agent_gets_409_and_raw_keys_are_accepted(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (
            await client.post(
                "/api/v1/sessions", json={**ECHO, "prompt": "/slow 3 a long answer"}, headers=headers
            )
        ).json()
        base = f"/api/v1/sessions/{created['id']}"
        await read_events(
            client,
            f"{base}/events",
            headers,
            until=lambda s: s.event == "message_update" and json.loads(s.data)["role"] == "user",
        )
        busy = await client.post(f"{base}/message", json={"content": "are you done?"}, headers=headers)
        assert busy.status_code == 409
        assert busy.headers["content-type"].startswith("application/problem+json")
        raw = await client.post(f"{base}/message", json={"content": "\u001b", "type": "raw"}, headers=headers)
        assert raw.status_code == 200
        empty = await client.post(f"{base}/message", json={"content": "   "}, headers=headers)
        assert empty.status_code == 422
        await client.delete(base, headers=headers)


async def test_other_tenant_gets_404_and_bad_input_is_problem_json(pg_urls, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    headers = stack.headers()
    other_org, other_user = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, other_org, other_user, "Other Org")
    other = stack.headers(org_id=other_org, user_id=other_user)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/sessions", json={**ECHO, "prompt": "org A secret", "title": "A's work"}, headers=headers
        )
        session_id = created.json()["id"]
        base = f"/api/v1/sessions/{session_id}"
        for method, path, body in (
            ("GET", base, None),
            ("GET", f"{base}/events", None),
            ("GET", f"{base}/messages", None),
            ("GET", f"{base}/status", None),
            ("POST", f"{base}/message", {"content": "hi"}),
            ("DELETE", base, None),
        ):
            response = await client.request(method, path, json=body, headers=other)
            assert response.status_code == 404, (method, path)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["detail"] == "session not found"
            for secret in ("org A secret", "A's work", str(stack.user_id), str(stack.org_id)):
                assert secret not in response.text
        listed = (await client.get("/api/v1/sessions", headers=other)).json()
        assert listed == {"sessions": [], "next_cursor": None}

        unknown_org = await client.post(
            "/api/v1/sessions", json=ECHO, headers=stack.headers(org_id=uuid.uuid4(), user_id=uuid.uuid4())
        )
        assert unknown_org.status_code == 403
        assert "organization" in unknown_org.json()["detail"]

        bad_agent = await client.post("/api/v1/sessions", json={"agent_type": "nope"}, headers=headers)
        assert bad_agent.status_code == 422
        assert "agent_type" in bad_agent.text
        not_allowed = await client.post(
            "/api/v1/sessions", json={"agent_type": "custom", "custom_agent": "rm-rf"}, headers=headers
        )
        assert not_allowed.status_code == 422 and "allowlist" in not_allowed.text

        bad_replay = await client.get(f"{base}/events", headers={**headers, "Last-Event-ID": "not-an-id"})
        assert bad_replay.status_code == 400
        assert bad_replay.headers["content-type"].startswith("application/problem+json")
        await client.delete(base, headers=headers)


async def test_quota_and_pagination(pg_urls, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    org, user = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, org, user, "Quota Org")
    headers = stack.headers(org_id=org, user_id=user)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        ids = []
        for _ in range(3):
            response = await client.post("/api/v1/sessions", json=ECHO, headers=headers)
            assert response.status_code == 202
            ids.append(response.json()["id"])
        over = await client.post("/api/v1/sessions", json=ECHO, headers=headers)
        assert over.status_code == 429
        assert over.headers["retry-after"]
        assert over.headers["content-type"].startswith("application/problem+json")

        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/api/v1/sessions", params=params, headers=headers)).json()
            seen += [s["id"] for s in page["sessions"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids) and len(seen) == 3
        assert (
            await client.get("/api/v1/sessions", params={"cursor": "garbage!"}, headers=headers)
        ).status_code == 400
        for session_id in ids:
            await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
