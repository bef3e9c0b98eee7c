"""Codex over ACP (npm @zed-industries/codex-acp, on Codex's own core) through the whole platform,
against the fake Responses API on 127.0.0.1: a multi-turn conversation with exact replies and the
system prompt in the model call, an MCP tool call through the session's gateway whose permission
request is answered through the API, cancel during a reply, and recovery after kill -9 of the host."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.agent_cli import OPENAI_API_KEY, codex_env, upstream_fixture
from tests.fakes.openai_api import FakeOpenAI
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
# A model Codex knows: for one it has no metadata for, codex-acp opens the first reply with a
# "Model metadata … not found" warning as agent text (the PTY adapter drops it as chrome).
MODEL = "gpt-5.2"


fake_openai = upstream_fixture("codex-acp", FakeOpenAI)


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:  # the stack fixture reads it
    return {
        **codex_env(request.getfixturevalue("fake_openai"), MODEL, "acp"),
        "AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true",
    }


async def test_a_conversation_with_codex_over_acp(fake_openai: FakeOpenAI, stack: Stack) -> None:
    _, calls = await two_turns_under_a_system_prompt(stack, "codex", fake_openai.response_requests)
    assert all(call.body["model"] == MODEL for call in calls), "the deployment's model"
    assert all(call.headers.get("authorization") == f"Bearer {OPENAI_API_KEY}" for call in calls)


async def test_cancel_during_a_reply_stops_it(fake_openai: FakeOpenAI, stack: Stack) -> None:
    await cancel_during_a_reply(stack, "codex")


async def test_kill_9_of_the_host_resumes_the_agents_session(fake_openai: FakeOpenAI, stack: Stack) -> None:
    calls = await kill_9_and_go_on(stack, "codex", fake_openai.response_requests)
    assert "tangerine" in json.dumps(calls[-1].body["input"]), "the loaded session had the turn"


async def test_an_mcp_tool_call_over_acp_asks_permission_and_runs_through_the_gateway(
    fake_openai: FakeOpenAI,
    stack: Stack,
    mcp_url_and_token: tuple[str, str],  # noqa: F811
) -> None:
    stack.start_worker("tools", "audit")
    headers = stack.headers()
    # Codex offers an MCP server's tools as a namespace ``mcp__<server>``; the gateway names them
    # ``<configuration>__<tool>``.
    fake_openai.tool_uses[ECHO_PING] = ("mcp__agentapi.tools__echo", {"text": "ping"})
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        allowed = await tool_call_with_permission(client, headers, "codex", mcp_url_and_token)
        await client.delete(f"/api/v1/sessions/{allowed.session_id}", headers=headers)
