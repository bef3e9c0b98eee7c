"""Real Gemini CLI in its ACP mode (``gemini --experimental-acp``) through the whole platform,
against the fake Gemini API on 127.0.0.1: a multi-turn conversation with exact replies, the user's
system prompt in the model call, ``backend: "acp"``, an MCP tool call through the session's
gateway whose permission request is answered through the API, cancel during a reply, and recovery
after kill -9 of the host (resumed, or started afresh saying why)."""

from __future__ import annotations

import httpx
import pytest

from tests.agent_cli import gemini_env, upstream_fixture
from tests.fakes.gemini_api import FakeGemini
from tests.fixtures.stack import Stack
from tests.test_acp import (
    ECHO_PING,
    cancel_during_a_reply,
    kill_9_and_go_on,
    mcp_url_and_token,  # noqa: F401 - the MCP server fixture
    tool_call_with_permission,
    two_turns_under_a_system_prompt,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


fake_gemini = upstream_fixture("gemini", FakeGemini)


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:  # the stack fixture reads it
    return {
        **gemini_env(request.getfixturevalue("fake_gemini"), "acp"),
        "AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true",
    }


async def test_a_conversation_with_gemini_over_acp(fake_gemini: FakeGemini, stack: Stack) -> None:
    messages, _ = await two_turns_under_a_system_prompt(stack, "gemini", fake_gemini.generate_requests)
    assert "Gemini CLI" in messages[0]["content"]


async def test_an_mcp_tool_call_over_acp_asks_permission_and_runs_through_the_gateway(
    fake_gemini: FakeGemini,
    stack: Stack,
    mcp_url_and_token: tuple[str, str],  # noqa: F811
) -> None:
    stack.start_worker("tools", "audit")
    headers = stack.headers()
    # Gemini CLI declares an MCP server's tools as ``mcp_<server>_<tool>``; the gateway names
    # them ``<configuration>__<tool>``.
    fake_gemini.tool_uses[ECHO_PING] = ("mcp_agentapi_tools__echo", {"text": "ping"})
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        allowed = await tool_call_with_permission(
            client, headers, "gemini", mcp_url_and_token, reports_tool_use=False
        )
        await client.delete(f"/api/v1/sessions/{allowed.session_id}", headers=headers)
    declared = [
        d["name"]
        for call in fake_gemini.generate_requests()
        for tool in call.body.get("tools", [])
        for d in tool.get("functionDeclarations", [])
    ]
    assert "mcp_agentapi_tools__echo" in declared, f"the gateway's tools reached the model: {set(declared)}"


async def test_cancel_during_a_reply_stops_it(fake_gemini: FakeGemini, stack: Stack) -> None:
    await cancel_during_a_reply(stack, "gemini")


async def test_kill_9_of_the_host_goes_on_and_says_whether_it_resumed(
    fake_gemini: FakeGemini, stack: Stack
) -> None:
    """Gemini CLI 0.61 answers session/load after a kill -9 with "No previous sessions found for
    this project" more often than not here (its chat file then holds only the session context), so
    the recovered session may start afresh: the conversation goes on and says why."""
    await kill_9_and_go_on(stack, "gemini", fake_gemini.generate_requests, must_load=False)
