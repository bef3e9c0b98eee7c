"""Real ACP agents (npm @zed-industries/claude-code-acp) through the whole platform, against the fake
Messages API on 127.0.0.1: multi-turn conversation, tool calls through the MCP gateway, permission
requests answered through the API, cancel, and the same conversation over the PTY side by side.

Every wait is for an event with a generous limit; nothing asserts on wall-clock time except the
issue's "cancel stops within 1 s", measured between two events the stack itself timestamps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent

from tests.agent_cli import fake_upstream, model_reply
from tests.fakes.anthropic_api import FakeAnthropic
from tests.fixtures.stack import Stack
from tests.test_skeleton_e2e import agent_said, read_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
API_KEY = "sk-ant-test-key-0123456789abcdefghijklmnop"


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with fake_upstream("claude-code-acp", FakeAnthropic) as fake:
        yield fake


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:  # the stack fixture reads it
    fake: FakeAnthropic = request.getfixturevalue("fake_anthropic")
    return {
        "AGENTAPI_ANTHROPIC_BASE_URL": fake.base_url,
        "AGENTAPI_ANTHROPIC_API_KEY": API_KEY,
        "AGENTAPI_CLAUDE_TRANSPORT": "acp",
    }


def data(sse: ServerSentEvent) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(sse.data)
    return parsed


def stable(sse: ServerSentEvent) -> bool:
    return sse.event == "status_change" and data(sse)["status"] == "stable"


async def start(client: httpx.AsyncClient, headers: dict[str, str], agent_type: str = "claude") -> str:
    created = await client.post("/api/v1/sessions", json={"agent_type": agent_type}, headers=headers)
    assert created.status_code == 202, created.text
    session_id: str = created.json()["id"]
    await read_events(client, f"/api/v1/sessions/{session_id}/events", headers, until=stable)
    return session_id


async def say(client: httpx.AsyncClient, headers: dict[str, str], session_id: str, text: str) -> None:
    """Send ``text`` and wait for its reply to complete (each text is unique within a session)."""
    url = f"/api/v1/sessions/{session_id}/events"
    sent = await client.post(
        f"/api/v1/sessions/{session_id}/message", json={"content": text}, headers=headers
    )
    assert sent.status_code == 200, sent.text
    await read_events(client, url, headers, until=agent_said(model_reply(text)))


async def test_a_multi_turn_conversation_over_acp_comes_back_exact(
    fake_anthropic: FakeAnthropic, stack: Stack
) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        agents = (await client.get("/api/v1/agents", headers=headers)).json()["agents"]
        claude = next(agent for agent in agents if agent["type"] == "claude")
        assert claude["transport"] == "acp" and claude["installed"], "claude-code-acp is what runs"
        session_id = await start(client, headers)
        status = (await client.get(f"/api/v1/sessions/{session_id}/status", headers=headers)).json()
        assert status["backend"] == "acp" and status["transport"] == "acp"
        assert status["status"] == "stable"
        for text in ("Say hello", "And a second turn", "A third"):
            await say(client, headers, session_id, text)
        messages = (await client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers)).json()[
            "messages"
        ]
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
    assert [m["id"] for m in messages] == list(range(7))
    assert "Claude Code" in messages[0]["content"] and messages[0]["role"] == "agent"
    turns = [(m["role"], m["content"]) for m in messages[1:]]
    assert turns == [
        ("user", "Say hello"),
        ("agent", model_reply("Say hello")),
        ("user", "And a second turn"),
        ("agent", model_reply("And a second turn")),
        ("user", "A third"),
        ("agent", model_reply("A third")),
    ], "exact replies, no chrome"
    calls = fake_anthropic.message_requests()
    assert all(call.headers.get("x-api-key") == API_KEY for call in calls)
