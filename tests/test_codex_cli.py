"""Real Codex CLI (npm @openai/codex) in our PTY against a fake OpenAI Responses API on 127.0.0.1:
through the whole platform (system prompt, MCP gateway, API key), and its screen formatting on
captured screens."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.agent_cli import (
    OPENAI_API_KEY,
    assert_gateway_used,
    codex_env,
    converse,
    model_reply,
    upstream_fixture,
)
from tests.fakes.openai_api import FakeOpenAI
from tests.fixtures.stack import Stack
from workers.agents.codex import COMPOSER, CodexAdapter

pytestmark = pytest.mark.timeout(120)
MODEL = "gpt-fake-codex"


fake_openai = upstream_fixture("codex", FakeOpenAI)


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:  # the stack fixture reads it
    # The PTY fallback: ACP is the default (tests/test_acp_codex.py).
    return codex_env(request.getfixturevalue("fake_openai"), MODEL, "pty")


async def test_a_message_to_codex_comes_back_clean(fake_openai: FakeOpenAI, stack: Stack) -> None:
    marker = f"house-rule-{uuid.uuid4().hex[:8]}"
    talk = await converse(stack, "codex", "Say hello", model_reply("Say hello"), f"Always follow {marker}.")
    assert talk.contents("user") == ["Say hello"]
    assert talk.contents("agent")[-1] == model_reply("Say hello"), "one clean agent message, no TUI chrome"
    assert "OpenAI Codex" in talk.contents("agent")[0], "message 0 is the start-up screen"

    calls = fake_openai.response_requests()
    assert calls, "codex called the fake Responses API"
    assert all(call.body["model"] == MODEL for call in calls), "the deployment's model"
    assert all(call.headers.get("authorization") == f"Bearer {OPENAI_API_KEY}" for call in calls)
    asked = [call for call in calls if "Say hello" in json.dumps(call.body["input"])]
    assert asked and marker in json.dumps(asked[0].body["input"]), "the system prompt reached the model"
    assert_gateway_used(stack, talk.session_id)


def test_format_message_drops_progress_and_the_input_box() -> None:
    screen = (
        f"{COMPOSER} Fix the bug\n\n• Looking into it\n  the fix is in main.py\n\n• Working (3s • esc to interrupt)\n\n"
        f"{COMPOSER} Explain this codebase\n\n  gpt-5 high · ~/project\n  ← for agents · ? for shortcuts"
    )
    assert CodexAdapter().format_message(screen, "Fix the bug") == "Looking into it\nthe fix is in main.py"
