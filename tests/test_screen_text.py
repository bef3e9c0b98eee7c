"""The screen's text as the watcher reads it is what pyte's own ``display`` shows, row for row."""

from __future__ import annotations

import pyte
import pytest

from workers.pty_session import _Screen

FEEDS = [
    "",
    "plain ascii\r\n\r\n  indented   \r\nlast",
    "Echo Agent 1.0 — a test agent\r\n╭" + "─" * 60 + "╮\r\n│ > typed\r\n╰" + "─" * 60 + "╯",
    "wide 你好世界 and emoji 🙂 in a row\r\nこんにちは",
    "combining: e\u0301 a\u0308 o\u0302 at the end\u0301",
    # A narrow character drawn over a wide one's stub: pyte's display skips the cell after a wide one.
    "你好\x1b[1;2Hx\r\n中\x1b[2;2Hy",
    # A wide character in the last column (no room for its stub) and text past the right edge.
    "\x1b[1;120H你\r\n" + "z" * 150,
    # Erased, scrolled and overwritten rows.
    "".join(f"row {n} 中\r\n" for n in range(60)) + "\x1b[5;1H\x1b[K\x1b[10;3Hover\x1b[J",
    "\x1b[?1049h\x1b[2J\x1b[3;5Halternate 字\x1b[1m bold\x1b[0m",
]


@pytest.mark.parametrize("feed", FEEDS)
def test_text_is_what_pyte_displays(feed: str) -> None:
    screen = _Screen(120, 40, lambda _reply: None)
    pyte.Stream(screen).feed(feed)
    displayed = "\n".join(line.rstrip() for line in screen.display).rstrip("\n")
    assert screen.text() == displayed
