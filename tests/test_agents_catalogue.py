"""GET /api/v1/agents on a live stack: every agent type, whether it can run here, what it needs."""

from __future__ import annotations

import httpx

from tests.fixtures.stack import Stack

STACK_ENV = {"AGENTAPI_OPENAI_API_KEY": "sk-test-only"}


def test_agents_say_what_is_installed_and_what_they_need(stack: Stack) -> None:
    answer = httpx.get(f"{stack.base_url}/api/v1/agents", headers=stack.headers(), timeout=10)
    assert answer.status_code == 200, answer.text
    agents = {agent["type"]: agent for agent in answer.json()["agents"]}
    assert list(agents) == ["claude", "ccrouter", "codex", "gemini", "aider", "goose", "droid", "custom"]
    # The test stack allowlists the echo agent and sets only an OpenAI key; Claude Code is installed
    # from package.json, aider is not.
    assert agents["custom"] == {
        "type": "custom",
        "label": "Custom command",
        "aliases": [],
        "installed": True,
        "transport": "pty",
        "configured": True,
        "needs": [],
        "custom_agents": ["echo"],
    }
    assert agents["claude"]["installed"] is True, "claude-code-acp is installed from package.json"
    assert agents["claude"]["transport"] == "acp", "ACP by default where the agent speaks it"
    assert agents["gemini"]["transport"] == "acp"
    assert agents["codex"]["transport"] == "acp"
    assert agents["goose"]["transport"] == "pty", "no ACP adapter for goose yet"
    assert agents["claude"]["needs"] == ["AGENTAPI_ANTHROPIC_API_KEY"]
    assert agents["codex"]["configured"] is True
    assert agents["ccrouter"]["aliases"] == ["ccr"]
    assert agents["ccrouter"]["needs"] == ["tenant settings: ccrouter"]
    assert agents["aider"]["installed"] is False


def test_agents_need_a_token(stack: Stack) -> None:
    answer = httpx.get(f"{stack.base_url}/api/v1/agents", timeout=10)
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("application/problem+json")


def test_console_login_refuses_unknown_and_malformed_codes(stack: Stack) -> None:
    unknown = httpx.post(f"{stack.base_url}/api/v1/console/login", json={"code": "x" * 43}, timeout=10)
    assert unknown.status_code == 404
    malformed = httpx.post(f"{stack.base_url}/api/v1/console/login", json={"code": "<script>"}, timeout=10)
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["field"] == "code"
