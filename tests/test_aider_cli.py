"""Real Aider (PyPI aider-chat) in our PTY against a fake OpenAI chat-completions API, through the
whole platform. Aider is not installed by this repo (it pins most of its dependencies): the test
runs where ``AGENTAPI_AIDER_BIN`` or ``aider`` on PATH names one, e.g. a virtualenv made with
``python -m venv /opt/aider && /opt/aider/bin/pip install aider-chat``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from services.agents.binaries import agent_binary
from tests.agent_cli import converse
from tests.fakes.openai_api import FakeOpenAI
from tests.fixtures.stack import Stack

AIDER = agent_binary("aider")
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(AIDER == "aider", reason="no aider here (AGENTAPI_AIDER_BIN or aider on PATH)"),
]
API_KEY = "sk-openai-test-aider"
# Aider wraps the user's words in its own instructions, so the fake answers every call alike.
REPLY = "Hello from the fake model.\n\nNothing to change yet."


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(REPLY) as fake:
        yield fake


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:  # the stack fixture reads it
    fake: FakeOpenAI = request.getfixturevalue("fake_openai")
    return {
        "AGENTAPI_OPENAI_BASE_URL": f"{fake.base_url}/v1",
        "AGENTAPI_OPENAI_API_KEY": API_KEY,
        "AGENTAPI_OPENAI_MODEL": "gpt-fake",
        "AGENTAPI_AIDER_BIN": AIDER,
        "AGENTAPI_AGENT_SETTLE_SECONDS": "2",
    }


async def test_a_message_to_aider_comes_back_clean(fake_openai: FakeOpenAI, stack: Stack) -> None:
    marker = f"house-rule-{uuid.uuid4().hex[:8]}"
    # Aider is still for seconds while it loads litellm, which the platform takes for a stable agent
    # (see the README): the first prompt is typed before its prompt shows, and must come back clean.
    talk = await converse(stack, "aider", "Say hello", REPLY, f"Always follow {marker}.")
    assert talk.contents("user") == ["Say hello"]
    assert talk.contents("agent")[-1] == REPLY, "one clean agent message, no prompt, file list or cost line"
    assert "Git repository created" in talk.contents("agent")[0], "message 0 is the start-up screen"
    calls = fake_openai.chat_requests()
    assert calls and all(call.headers.get("authorization") == f"Bearer {API_KEY}" for call in calls)
    asked = [call for call in calls if "Say hello" in json.dumps(call.body)]
    assert asked and marker in json.dumps(asked[0].body), "the conventions file reached the model"
