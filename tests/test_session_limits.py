"""Session limits on the running system: idle timeout and the workspace quota end a session with a reason."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures.stack import Stack
from tests.test_skeleton_e2e import ECHO, agent_said, named, read_events

pytestmark = pytest.mark.timeout(120)
STACK_ENV = {
    "AGENTAPI_SESSION_TIMEOUT": "3",
    "AGENTAPI_SESSION_MAX_LIFETIME": "60",
    "AGENTAPI_WORKSPACE_QUOTA_BYTES": str(2 * 1024 * 1024),
}


async def test_an_idle_session_ends_with_idle_timeout(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (
            await client.post("/api/v1/sessions", json={**ECHO, "prompt": "hi"}, headers=headers)
        ).json()
        url = created["events_url"]
        answered = await read_events(client, url, headers, until=agent_said("echo: hi"))
        ended = await read_events(
            client, url, {**headers, "Last-Event-ID": answered[-1].id}, until=named("session_ended")
        )
        assert json.loads(ended[-1].data)["reason"] == "idle_timeout"
        session = (await client.get(f"/api/v1/sessions/{created['id']}", headers=headers)).json()
        assert (session["status"], session["end_reason"]) == ("ended", "idle_timeout")
        late = await client.post(
            f"/api/v1/sessions/{created['id']}/message", json={"content": "still there?"}, headers=headers
        )
        assert late.status_code == 410 and "ended" in late.json()["detail"]
        messages = (await client.get(f"/api/v1/sessions/{created['id']}/messages", headers=headers)).json()[
            "messages"
        ]
        assert [m["content"] for m in messages if m["role"] == "agent"][-1] == "echo: hi"


async def test_a_workspace_over_its_quota_ends_the_session(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = (
            await client.post("/api/v1/sessions", json={**ECHO, "prompt": "/write 3000000"}, headers=headers)
        ).json()
        ended = await read_events(client, created["events_url"], headers, until=named("session_ended"))
        assert json.loads(ended[-1].data)["reason"] == "disk_quota"
