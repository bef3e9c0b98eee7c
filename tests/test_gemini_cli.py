"""Real Gemini CLI (npm @google/gemini-cli) in our PTY against a fake Gemini API on 127.0.0.1:
through the whole platform (system prompt, MCP gateway, API key), and its screen formatting on
captured screens."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.agent_cli import (
    GEMINI_API_KEY,
    GEMINI_MODEL,
    assert_gateway_used,
    converse,
    gemini_env,
    model_reply,
    upstream_fixture,
)
from tests.fakes.gemini_api import FakeGemini
from tests.fixtures.stack import Stack
from workers.agents.gemini import GeminiAdapter

pytestmark = pytest.mark.timeout(120)


fake_gemini = upstream_fixture("gemini", FakeGemini)


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:  # the stack fixture reads it
    # The PTY fallback: ACP is the default (tests/test_acp_gemini.py).
    return gemini_env(request.getfixturevalue("fake_gemini"), "pty")


async def test_a_message_to_gemini_comes_back_clean(fake_gemini: FakeGemini, stack: Stack) -> None:
    marker = f"house-rule-{uuid.uuid4().hex[:8]}"
    talk = await converse(stack, "gemini", "Say hello", model_reply("Say hello"), f"Always follow {marker}.")
    assert talk.contents("user") == ["Say hello"]
    assert talk.contents("agent")[-1] == model_reply("Say hello"), "one clean agent message, no TUI chrome"
    assert "Gemini CLI" in talk.contents("agent")[0], "message 0 is the start-up screen"

    calls = fake_gemini.generate_requests()
    assert calls, "gemini called the fake Gemini API"
    assert all(f"/models/{GEMINI_MODEL}:" in call.path for call in calls), "the deployment's model"
    assert all(call.headers.get("x-goog-api-key") == GEMINI_API_KEY for call in calls)
    asked = [call for call in calls if "Say hello" in json.dumps(call.body["contents"])]
    assert asked and marker in json.dumps(asked[0].body["systemInstruction"]), (
        "the system prompt reached the model"
    )
    assert_gateway_used(stack, talk.session_id)


def test_format_message_drops_the_spinner_and_input_box() -> None:
    screen = (
        "╭────────────────╮\n│  > Fix the bug │\n╰────────────────╯\n\n✦ Looking into it\n  the fix is in main.py\n\n"
        "⠼ Reticulating splines (esc to cancel, 3s)\n\n >   Type your message or @path/to/file\n? for shortcuts"
    )
    assert GeminiAdapter().format_message(screen, "Fix the bug") == "Looking into it\nthe fix is in main.py"
