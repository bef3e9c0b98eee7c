"""Real Codex CLI (npm @openai/codex) in our PTY against a fake OpenAI Responses API on 127.0.0.1:
through the whole platform (system prompt, MCP gateway, API key), and its screen formatting on
captured screens."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_cli import converse, gateway_statuses
from tests.fakes.openai_api import FakeOpenAI
from tests.fixtures.stack import Stack
from workers.agents.binaries import repo_bin
from workers.agents.codex import COMPOSER, CodexAdapter
from workers.screen_tracker import new_lines

pytestmark = pytest.mark.timeout(120)
GOLDEN = Path(__file__).parent / "golden" / "codex"
API_KEY = "sk-openai-test-0123456789"
MODEL = "gpt-fake-codex"


def reply(text: str) -> str:
    return f"FAKE-REPLY to '{text}'.\nA second line, as models write."


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    if not repo_bin("codex").exists():
        pytest.fail("node_modules/.bin/codex is missing: run `npm ci` (the README's install command)")
    with FakeOpenAI(reply) as fake:
        yield fake


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:  # the stack fixture reads it
    fake: FakeOpenAI = request.getfixturevalue("fake_openai")
    return {
        "AGENTAPI_OPENAI_BASE_URL": f"{fake.base_url}/v1",
        "AGENTAPI_OPENAI_API_KEY": API_KEY,
        "AGENTAPI_OPENAI_MODEL": MODEL,
        "AGENTAPI_AGENT_SETTLE_SECONDS": "2",
    }


async def test_a_message_to_codex_comes_back_clean(fake_openai: FakeOpenAI, stack: Stack) -> None:
    marker = f"house-rule-{uuid.uuid4().hex[:8]}"
    talk = await converse(stack, "codex", "Say hello", reply("Say hello"), f"Always follow {marker}.")
    assert talk.contents("user") == ["Say hello"]
    assert talk.contents("agent")[-1] == reply("Say hello"), "one clean agent message, no TUI chrome"
    assert "OpenAI Codex" in talk.contents("agent")[0], "message 0 is the start-up screen"

    calls = fake_openai.response_requests()
    assert calls, "codex called the fake Responses API"
    assert all(call.body["model"] == MODEL for call in calls), "the deployment's model"
    assert all(call.headers.get("authorization") == f"Bearer {API_KEY}" for call in calls)
    asked = [call for call in calls if "Say hello" in json.dumps(call.body["input"])]
    assert asked and marker in json.dumps(asked[0].body["input"]), "the system prompt reached the model"
    statuses = gateway_statuses(stack, talk.session_id)
    assert statuses and all(status < 300 for status in statuses), (
        "it connected to its MCP gateway with its token"
    )


def test_format_message_on_a_captured_screen() -> None:
    before = (GOLDEN / "before.txt").read_text()
    after = (GOLDEN / "after.txt").read_text()
    text = CodexAdapter().format_message(new_lines(before, after), "Say hello")
    assert text == "FAKE-REPLY: Say hello\nsecond line of the reply"


def test_format_message_drops_progress_and_the_input_box() -> None:
    screen = (
        f"{COMPOSER} Fix the bug\n\n• Looking into it\n  the fix is in main.py\n\n• Working (3s • esc to interrupt)\n\n"
        f"{COMPOSER} Explain this codebase\n\n  gpt-5 high · ~/project\n  ← for agents · ? for shortcuts"
    )
    assert CodexAdapter().format_message(screen, "Fix the bug") == "Looking into it\nthe fix is in main.py"
