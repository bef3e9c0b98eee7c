"""Real Gemini CLI in its ACP mode (``gemini --experimental-acp``) through the whole platform,
against the fake Gemini API on 127.0.0.1: a multi-turn conversation with exact replies, the user's
system prompt in the model call, and ``backend: "acp"``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.agent_cli import fake_upstream, model_reply
from tests.fakes.gemini_api import FakeGemini
from tests.fixtures.stack import Stack
from tests.test_acp import say, start

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
