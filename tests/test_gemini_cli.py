"""Real Gemini CLI (npm @google/gemini-cli) in our PTY against a fake Gemini API on 127.0.0.1:
through the whole platform (system prompt, MCP gateway, API key), and its screen formatting on
captured screens."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.agent_cli import assert_gateway_used, converse, fake_upstream, model_reply
from tests.fakes.gemini_api import FakeGemini
from tests.fixtures.stack import Stack
from workers.agents.gemini import GeminiAdapter

pytestmark = pytest.mark.timeout(120)
API_KEY = "gemini-test-key-0123456789"
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
        # The PTY fallback: ACP is the default (tests/test_acp_gemini.py).
        "AGENTAPI_GEMINI_TRANSPORT": "pty",
        "AGENTAPI_AGENT_SETTLE_SECONDS": "2",
    }


async def test_a_message_to_gemini_comes_back_clean(fake_gemini: FakeGemini, stack: Stack) -> None:
    marker = f"house-rule-{uuid.uuid4().hex[:8]}"
    talk = await converse(stack, "gemini", "Say hello", model_reply("Say hello"), f"Always follow {marker}.")
    assert talk.contents("user") == ["Say hello"]
    assert talk.contents("agent")[-1] == model_reply("Say hello"), "one clean agent message, no TUI chrome"
    assert "Gemini CLI" in talk.contents("agent")[0], "message 0 is the start-up screen"

    calls = fake_gemini.generate_requests()
    assert calls, "gemini called the fake Gemini API"
    assert all(f"/models/{MODEL}:" in call.path for call in calls), "the deployment's model"
    assert all(call.headers.get("x-goog-api-key") == API_KEY for call in calls)
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
