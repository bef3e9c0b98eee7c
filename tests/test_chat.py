"""Chat: start or continue a session in one call, and one stream across the caller's sessions."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
from httpx_sse import aconnect_sse

from tests.fixtures.stack import Stack, seed_async
from tests.test_skeleton_e2e import ECHO, agent_said, read_events

STACK_ENV = {"AGENTAPI_MAX_SESSIONS_PER_USER": "10"}


async def test_chat_starts_and_continues_sessions_and_streams_them_all(stack: Stack, pg_urls) -> None:  # type: ignore[no-untyped-def]
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        started = await client.post("/api/v1/chat", json={**ECHO, "content": "first words"}, headers=headers)
        assert started.status_code == 202 and started.json()["created"] is True
        session_id = started.json()["session_id"]
        await read_events(
            client, started.json()["events_url"], headers, until=agent_said("echo: first words")
        )

        seen: list[dict[str, object]] = []
        joined = asyncio.Event()

        async def listen() -> None:
            async with aconnect_sse(client, "GET", "/api/v1/chat/stream", headers=headers) as source:
                async for sse in source.aiter_sse():
                    if sse.event == "session_joined" and json.loads(sse.data)["session_id"] == session_id:
                        joined.set()
                    if sse.event == "message_update" and sse.data:
                        data = json.loads(sse.data)
                        seen.append(data)
                        if data["message"] == "echo: second words" and data["type"] == "message.completed":
                            return

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(joined.wait(), 30)
        for _ in range(40):
            sent = await client.post(
                "/api/v1/chat", json={"session_id": session_id, "content": "second words"}, headers=headers
            )
            if sent.status_code == 200:
                break
            assert sent.status_code == 409  # still settling from the first answer
            await asyncio.sleep(0.25)
        assert sent.json() == {
            "session_id": session_id,
            "created": False,
            "events_url": f"/api/v1/sessions/{session_id}/events",
            "event_id": None,
        }
        await asyncio.wait_for(listener, 30)
        assert all(event["session_id"] == session_id for event in seen)
        assert "echo: first words" not in [event["message"] for event in seen]  # live only, no replay

        other_org, other_user = uuid.uuid4(), uuid.uuid4()
        await seed_async(pg_urls.owner, other_org, other_user, "Chat Elsewhere")
        other = stack.headers(org_id=other_org, user_id=other_user)
        stranger = await client.post(
            "/api/v1/chat", json={"session_id": session_id, "content": "x"}, headers=other
        )
        assert stranger.status_code == 404
        bad = await client.post("/api/v1/chat", json={"content": "who am I talking to"}, headers=headers)
        assert bad.status_code == 422 and "agent_type" in bad.json()["detail"]
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
