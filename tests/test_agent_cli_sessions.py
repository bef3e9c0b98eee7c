"""Codex and Gemini CLI, each in our PTY against its fake model API, as their adapters set them up:
they list the tools of a bearer-protected MCP server (standing in for the session's gateway) to the
model, which a wrong URL, header or config key would leave out; and restarted for a recovery
(``resume``) they carry on the same conversation."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.gemini_api import FakeGemini
from tests.fakes.model_server import FakeModelServer, Recorded
from tests.fakes.openai_api import FakeOpenAI
from tests.test_mcp_tools import http_server  # noqa: F401 - the MCP server fixture
from tests.waiting import until
from workers.agents import get_adapter
from workers.agents.base import AgentAdapter, LaunchContext
from workers.conversation import Conversation, Timing
from workers.pty_session import PtySession
from workers.session_host import base_environment

pytestmark = pytest.mark.timeout(90)


def agent_env(agent_type: str, fake: FakeModelServer) -> dict[str, str]:
    if agent_type == "gemini":
        return {
            "GOOGLE_GEMINI_BASE_URL": fake.base_url,
            "GEMINI_API_KEY": "gemini-test-key",
            "GEMINI_MODEL": "gemini-fake",
        }
    return {
        "OPENAI_BASE_URL": f"{fake.base_url}/v1",
        "OPENAI_API_KEY": "sk-test-key",
        "OPENAI_MODEL": "gpt-fake",
    }


def tool_names(agent_type: str, body: dict[str, Any]) -> list[str]:
    """Gemini: ``mcp_<server>_<tool>`` function declarations; Codex: a ``mcp__<server>`` namespace."""
    tools = body.get("tools") or []
    if agent_type == "gemini":
        return [d["name"] for t in tools for d in t.get("functionDeclarations", [])]
    return [
        f"{t['name']}.{inner['name']}" for t in tools if t.get("type") == "namespace" for inner in t["tools"]
    ]


# The conversation's own model call (Gemini CLI also asks a router model about the message).
# Each wait of a turn, well inside the test's limit, so that a lost prompt fails with the screen.
TURN_SECONDS = 30
TURNS = [("codex", FakeOpenAI, "/v1/responses"), ("gemini", FakeGemini, ":streamGenerateContent")]


async def turn(
    adapter: AgentAdapter, ctx: LaunchContext, fake: FakeModelServer, route: str, text: str
) -> Recorded:
    """Start the CLI as the session host would, send ``text``; the model call that carried it."""
    adapter.prepare(ctx)
    env = {**base_environment(ctx.home), **adapter.environment(ctx)}
    pty = PtySession(adapter.command(ctx), cwd=ctx.workspace, env=env)
    # The production settle window: a resumed Gemini CLI looks ready for over a second on a loaded
    # host before it loads the session, which drops the Enter of a message typed meanwhile.
    conversation = Conversation(pty, adapter, Timing())
    await conversation.start()
    try:
        await conversation.wait_stable(60)
        await conversation.send_user(text)

        def calls() -> list[Recorded]:
            return [r for r in fake.requests if r.route.endswith(route) and text in json.dumps(r.body)]

        try:
            await until(calls, TURN_SECONDS, f"the model is asked {text!r}")
            # The CLI keeps the turn in its history once the reply has arrived; stopping it earlier
            # would leave a resumed CLI nothing to carry on from.
            await until(
                lambda: "FAKE-REPLY" in conversation.pty.snapshot(), TURN_SECONDS, "the reply is shown"
            )
        except AssertionError as exc:
            # A hang in a full run (passing alone) left nothing to read: say what the CLI showed.
            raise AssertionError(f"{exc}; the CLI's screen:\n{conversation.pty.snapshot()}") from None
        await conversation.wait_stable(60)
        return calls()[0]
    finally:
        await conversation.stop()


@pytest.mark.parametrize(("agent_type", "fake_class", "turn_route"), TURNS)
async def test_mcp_tools_reach_the_model_and_a_resumed_cli_carries_on(
    agent_type: str,
    fake_class: type[FakeModelServer],
    turn_route: str,
    http_server: tuple[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    url, token = http_server
    adapter = get_adapter(agent_type)
    with fake_class(lambda text: f"FAKE-REPLY to '{text}'") as fake:
        ctx = LaunchContext(
            session_id=uuid.uuid4(),
            org_id=uuid.uuid4(),
            user_id=uuid.uuid4(),
            workspace=tmp_path,
            home=tmp_path / ".home",
            agent_env=agent_env(agent_type, fake),
            mcp_gateway_url=url,
            mcp_gateway_token=token,
        )
        first = await turn(adapter, ctx, fake, turn_route, "Say hello")
        names = tool_names(agent_type, first.body)
        expected = "mcp_agentapi_echo" if agent_type == "gemini" else "mcp__agentapi.echo"
        assert expected in names, f"the MCP server's tools reached the model: {names}"
        assert "FAKE-REPLY" not in json.dumps(first.body), "a fresh session has no history"

        resumed = await turn(adapter, replace(ctx, resume=True), fake, turn_route, "And once more")
        assert "FAKE-REPLY to 'Say hello'" in json.dumps(resumed.body), (
            "the resumed CLI sent the earlier turn"
        )
