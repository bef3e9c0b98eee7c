"""Golden screens: for each pinned CLI version, the screen before and after it answered "Say hello"
(captured in our PTY against the fake model servers) and the message its adapter must make of
them. A TUI change in a new CLI version shows here as one failing directory; recapture it with the
real CLI (tests/test_<cli>_cli.py drive it against the same fakes) and check the new message.
Each directory's ``errors/`` holds the CLI's failure screens (tests/test_agent_error_screens.py).

Pinned versions: Claude Code 2.1.197 (``claude``; ``ccrouter`` through Claude Code Router 2.0),
Codex 0.169.0, Gemini CLI 0.61.0, Aider 0.86.2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.agents import get_adapter
from workers.screen_tracker import new_lines

GOLDEN = Path(__file__).parent / "agents" / "golden"
CAPTURES = sorted(path.parent.name for path in GOLDEN.glob("*/before.txt"))


def test_every_pinned_cli_has_a_capture() -> None:
    assert CAPTURES == ["aider", "ccrouter", "claude", "codex", "gemini"]


@pytest.mark.parametrize("agent_type", CAPTURES)
def test_a_captured_reply_becomes_the_expected_message(agent_type: str) -> None:
    folder = GOLDEN / agent_type
    before, after = (folder / "before.txt").read_text(), (folder / "after.txt").read_text()
    expected = (folder / "expected.txt").read_text().rstrip("\n")
    assert get_adapter(agent_type).format_message(new_lines(before, after), "Say hello") == expected
