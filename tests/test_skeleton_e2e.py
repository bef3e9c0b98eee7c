"""HTTP → Redis stream → Dramatiq actor in another process → event log + pub/sub → SSE."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.fixtures.stack import Stack, seed_async

pytestmark = pytest.mark.timeout(90)


async def read_events(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], until: str, limit: int = 50
) -> list[ServerSentEvent]:
    """SSE events up to and including the first one named ``until``; data-less frames (the
    connection's ``retry:`` hint) are not events for a browser either, so they are skipped."""
    seen: list[ServerSentEvent] = []
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            seen.append(sse)
            if sse.event == until or len(seen) >= limit:
                break
    return seen


async def test_session_round_trip_and_replay(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/sessions",
            json={"agent_type": "custom", "prompt": "hello from the skeleton"},
            headers={**headers, "X-Correlation-ID": "corr-e2e-1"},
        )
        assert created.status_code == 202, created.text
        body = created.json()
        assert body["status"] == "requested"
        assert len(body["event_id"]) == 26
        events_url = body["events_url"]

        first = await read_events(client, events_url, headers, until="session_ended")
        names = [sse.event for sse in first]
        assert names == ["session_started", "message_update", "session_ended"], names
        reply = json.loads(first[1].data)
        assert reply["role"] == "agent"
        assert reply["message"] == "hello from the skeleton"
        assert reply["correlation_id"] == "corr-e2e-1"
        assert json.loads(first[0].data)["worker"], "the worker names its host:pid"
        ids = [sse.id for sse in first]
        assert all(ids) and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))

        # Reconnect after the first event: only what was missed comes back, nothing twice.
        replay = await read_events(
            client, events_url, {**headers, "Last-Event-ID": ids[0]}, until="session_ended"
        )
        assert [sse.id for sse in replay] == ids[1:]
        assert [sse.event for sse in replay] == names[1:]


async def test_live_events_reach_a_subscriber_connected_before_the_work(stack: Stack) -> None:
    """Subscribe first, then the session starts: the live path (pub/sub), not only the replay."""
    import asyncio

    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/sessions", json={"agent_type": "custom", "prompt": "live"}, headers=headers
        )
        assert created.status_code == 202
        url = created.json()["events_url"]
        events = await asyncio.wait_for(read_events(client, url, headers, until="session_ended"), 30)
        assert [e.event for e in events][-1] == "session_ended"
        assert json.loads(events[1].data)["message"] == "live"


async def test_other_tenant_gets_404_and_bad_input_is_problem_json(pg_urls, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    headers = stack.headers()
    other_org, other_user = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, other_org, other_user, "Other Org")
    other = stack.headers(org_id=other_org, user_id=other_user)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/sessions", json={"agent_type": "custom", "prompt": "x"}, headers=headers
        )
        session_id = created.json()["id"]
        for path in (f"/api/v1/sessions/{session_id}", f"/api/v1/sessions/{session_id}/events"):
            response = await client.get(path, headers=other)
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["detail"] == "session not found"
            for secret in ("org A secret", "A's work", str(stack.user_id), str(stack.org_id)):
                assert secret not in response.text

        unknown_org = await client.post(
            "/api/v1/sessions",
            json={"agent_type": "custom"},
            headers=stack.headers(org_id=uuid.uuid4(), user_id=uuid.uuid4()),
        )
        assert unknown_org.status_code == 403
        assert "organization" in unknown_org.json()["detail"]

        bad_agent = await client.post("/api/v1/sessions", json={"agent_type": "nope"}, headers=headers)
        assert bad_agent.status_code == 422
        assert bad_agent.headers["content-type"].startswith("application/problem+json")
        assert "agent_type" in bad_agent.text

        bad_replay = await client.get(
            f"/api/v1/sessions/{session_id}/events", headers={**headers, "Last-Event-ID": "not-an-id"}
        )
        assert bad_replay.status_code == 400
        assert bad_replay.headers["content-type"].startswith("application/problem+json")
