"""Failure screens of the real CLIs (captured in our PTY: Claude Code 2.1.197 without a key, against a
closed port, and through a Claude Code Router whose provider is unreachable; Codex 0.169.0 without
a key and against a closed port) are recognised as coder/agentapi's ``agent_error``; a reply is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.agents import get_adapter
from workers.agents.base import AgentError, recognise_error

GOLDEN = Path(__file__).parent / "agents" / "golden"

CASES = [
    (
        "claude",
        "claude/errors/not_logged_in.txt",
        AgentError("not_logged_in", "error", "Not logged in · Please run /login"),
    ),
    (
        "ccrouter",
        "claude/errors/api_error_retrying.txt",
        AgentError("api_error", "warning", "API error · Retrying in 12s · attempt 7/10"),
    ),
    (
        "claude",
        "claude/errors/connection_refused_retrying.txt",
        AgentError(
            "api_error",
            "warning",
            "Unable to connect to API (ConnectionRefused) · Retrying in 16s · attempt 7/10",
        ),
    ),
    (
        "codex",
        "codex/errors/missing_key.txt",
        AgentError("not_logged_in", "error", "Missing environment variable: `OPENAI_API_KEY`."),
    ),
    (
        "codex",
        "codex/errors/reconnecting.txt",
        AgentError("api_error", "warning", "Connection failed: error sending request"),
    ),
]


@pytest.mark.parametrize(("agent_type", "capture", "expected"), CASES, ids=[c[1] for c in CASES])
def test_a_captured_failure_screen_is_an_agent_error(
    agent_type: str, capture: str, expected: AgentError
) -> None:
    assert recognise_error(get_adapter(agent_type), (GOLDEN / capture).read_text()) == expected


@pytest.mark.parametrize("agent_type", ["claude", "codex"])
def test_a_reply_is_no_agent_error(agent_type: str) -> None:
    for name in ("before.txt", "after.txt"):
        assert recognise_error(get_adapter(agent_type), (GOLDEN / agent_type / name).read_text()) is None


def test_a_countdown_is_the_same_error_and_another_failure_is_not() -> None:
    adapter = get_adapter("claude")
    screen = (GOLDEN / "claude/errors/api_error_retrying.txt").read_text()
    first = recognise_error(adapter, screen)
    later = recognise_error(
        adapter, screen.replace("Retrying in 12s · attempt 7", "Retrying in 3s · attempt 8")
    )
    assert first and later and first.key == later.key and first.message != later.message
    refused = recognise_error(adapter, (GOLDEN / "claude/errors/connection_refused_retrying.txt").read_text())
    assert refused and refused.key != first.key


def test_a_model_reply_that_talks_about_errors_is_not_one() -> None:
    screen = "❯ What does API Error mean?\n\n● API Error: 500 means the server failed.\n  Retrying in 3s · attempt 2 is what the CLI shows.\n"  # noqa: RUF001
    assert recognise_error(get_adapter("claude"), screen) is None


@pytest.mark.parametrize(
    ("agent_type", "capture"),
    [("ccrouter", "claude/errors/api_error_retrying.txt"), ("codex", "codex/errors/reconnecting.txt")],
)
def test_the_tip_under_a_spinner_is_no_part_of_a_message(agent_type: str, capture: str) -> None:
    screen = (GOLDEN / capture).read_text()
    assert "Tip: " in screen
    assert "Tip: " not in get_adapter(agent_type).format_message(screen, "Say hello")
