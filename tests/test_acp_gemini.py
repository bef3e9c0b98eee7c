"""Real Gemini CLI in its ACP mode (``gemini --experimental-acp``) through the whole platform,
against the fake Gemini API on 127.0.0.1: a multi-turn conversation with exact replies, the user's
system prompt in the model call, ``backend: "acp"``, an MCP tool call through the session's
gateway whose permission request is answered through the API, cancel during a reply, and recovery
after kill -9 of the host (resumed, or started afresh saying why)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.agent_cli import fake_upstream, model_reply
from tests.fakes.gemini_api import FakeGemini
from tests.fixtures.stack import Stack
from tests.test_acp import (
    cancel_during_a_reply,
    completed_with,
    data,
    kill_9_and_go_on,
    mcp_url_and_token,  # noqa: F401 - the MCP server fixture
    post_message,
    say,
    start,
)
from tests.test_skeleton_e2e import named, read_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
API_KEY = "gemini-test-key-0123456789"
# A fixed model: Gemini CLI's automatic routing would ask a classifier model first.
MODEL = "gemini-fake-pro"


@pytest.fixture(scope="module")
def fake_gemini() -> Iterator[FakeGemini]:
    with fake_upstream("gemini", FakeGemini) as fake:
        yield fake


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:  # the stack fixture reads it
    fake: FakeGemini = request.getfixturevalue("fake_gemini")
    return {
        "AGENTAPI_GEMINI_BASE_URL": fake.base_url,
        "AGENTAPI_GEMINI_API_KEY": API_KEY,
        "AGENTAPI_GEMINI_MODEL": MODEL,
        "AGENTAPI_GEMINI_TRANSPORT": "acp",
        "AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true",
    }


async def test_a_conversation_with_gemini_over_acp(fake_gemini: FakeGemini, stack: Stack) -> None:
    headers = stack.headers()
    marker = f"house-rule-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        saved = await client.post(
            "/api/v1/prompts",
            json={"scope": "user", "name": "gemini acp test", "content": f"Always follow {marker}."},
            headers=headers,
        )
        assert saved.status_code == 201, saved.text
        session_id = await start(client, headers, "gemini")
        status = (await client.get(f"/api/v1/sessions/{session_id}/status", headers=headers)).json()
        assert status["backend"] == "acp"
        for text in ("Say hello", "And a second turn"):
            await say(client, headers, session_id, text)
        messages = (await client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers)).json()
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
    assert "Gemini CLI" in messages["messages"][0]["content"]
    assert [(m["role"], m["content"]) for m in messages["messages"][1:]] == [
        ("user", "Say hello"),
        ("agent", model_reply("Say hello")),
        ("user", "And a second turn"),
        ("agent", model_reply("And a second turn")),
    ]
    calls = fake_gemini.generate_requests()
    assert calls and any(marker in json.dumps(call.body) for call in calls), "the system prompt reached it"


async def test_an_mcp_tool_call_over_acp_asks_permission_and_runs_through_the_gateway(
    fake_gemini: FakeGemini,
    stack: Stack,
    mcp_url_and_token: tuple[str, str],  # noqa: F811
) -> None:
    url, token = mcp_url_and_token
    stack.start_worker("tools", "audit")
    headers = stack.headers()
    # Gemini CLI declares an MCP server's tools as ``mcp_<server>_<tool>``; the gateway names
    # them ``<configuration>__<tool>``.
    fake_gemini.tool_uses["Echo ping with the tool"] = ("mcp_agentapi_tools__echo", {"text": "ping"})
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        config = await client.post(
            "/api/v1/mcp/configurations",
            json={
                "name": "tools",
                "transport": "http",
                "endpoint_url": url,
                "auth_type": "bearer",
                "bearer_token": token,
            },
            headers=headers,
        )
        assert config.status_code == 201, config.text
        session_id = await start(client, headers, "gemini")
        events_url = f"/api/v1/sessions/{session_id}/events"
        await post_message(client, headers, session_id, "Echo ping with the tool")
        asked = data((await read_events(client, events_url, headers, until=named("permission_request")))[-1])
        allow = next(o["option_id"] for o in asked["options"] if o["kind"] == "allow_once")
        answered = await client.post(
            f"/api/v1/sessions/{session_id}/permissions/{asked['request_id']}",
            json={"option_id": allow},
            headers=headers,
        )
        assert answered.status_code == 202, answered.text
        events = await read_events(client, events_url, headers, until=completed_with("TOOL-RESULT"))
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
    declared = [
        d["name"]
        for call in fake_gemini.generate_requests()
        for tool in call.body.get("tools", [])
        for d in tool.get("functionDeclarations", [])
    ]
    assert "mcp_agentapi_tools__echo" in declared, f"the gateway's tools reached the model: {set(declared)}"
    gateway = [data(e) for e in events if e.event == "tool_call" and data(e)["type"].startswith("tool_call.")]
    assert any(g["type"] == "tool_call.completed" and g.get("tool") == "echo" for g in gateway), (
        "the call went through the session's MCP gateway"
    )
    agent_calls = [g for g in gateway if g["type"] == "tool_call.agent"]
    assert agent_calls and agent_calls[-1]["status"] == "completed", "the agent's own view of the call"
    assert "echo: ping" in data(events[-1])["message"], "the tool's output went back to the model"


async def test_cancel_during_a_reply_stops_it(fake_gemini: FakeGemini, stack: Stack) -> None:
    await cancel_during_a_reply(stack, "gemini")


async def test_kill_9_of_the_host_goes_on_and_says_whether_it_resumed(
    fake_gemini: FakeGemini, stack: Stack
) -> None:
    """Gemini CLI 0.61 answers session/load after a kill -9 with "No previous sessions found for
    this project" more often than not here (its chat file then holds only the session context), so
    the recovered session may start afresh: the conversation goes on and says why."""
    await kill_9_and_go_on(stack, "gemini", fake_gemini.generate_requests, must_load=False)
