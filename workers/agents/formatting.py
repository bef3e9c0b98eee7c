"""Text helpers adapters share to turn screen lines into a clean agent message."""

from __future__ import annotations

import re
import textwrap
from difflib import SequenceMatcher

BOX_CHARS = set("╭╮╰╯─│┌┐└┘├┤┬┴┼═║╔╗╚╝ ")
_WS = re.compile(r"\s+")


def is_box_border(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and set(stripped) <= BOX_CHARS


def is_input_box_line(line: str) -> bool:
    """A line inside an input box: starts with a box side (``│ > text``)."""
    return line.lstrip().startswith(("│", "┃", "║"))


def _normal(text: str) -> str:
    return _WS.sub(" ", text).strip()


def drop_echo(lines: list[str], user_input: str, markers: tuple[str, ...] = (">", "›", "❯")) -> list[str]:  # noqa: RUF001
    """Remove the echoed user input: the first run of lines that, prompt marker removed, spell it."""
    target = _normal(user_input)
    if not target:
        return lines
    for start, line in enumerate(lines):
        text = line.strip()
        for marker in markers:
            if text.startswith(marker):
                text = text[len(marker) :]
                break
        else:
            continue
        collected = text
        for end in range(start, min(start + 1 + user_input.count("\n") + 20, len(lines))):
            if end > start:
                collected += " " + lines[end].strip()
            if SequenceMatcher(None, _normal(collected), target).ratio() >= 0.9:
                return lines[:start] + lines[end + 1 :]
    return lines


def trim_blank(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def collapse_blank_runs(lines: list[str]) -> list[str]:
    result: list[str] = []
    for line in lines:
        if not line.strip() and result and not result[-1].strip():
            continue
        result.append(line)
    return result


def clean_message(screen: str, user_input: str, footer: re.Pattern[str] | None = None) -> str:
    """Generic formatting: echo, input-box chrome and footer hints removed, blank edges trimmed."""
    lines = [line.rstrip() for line in screen.splitlines()]
    lines = [line for line in lines if not is_box_border(line) and not is_input_box_line(line)]
    if footer is not None:
        lines = [line for line in lines if not footer.search(line)]
    lines = drop_echo(lines, user_input)
    return textwrap.dedent("\n".join(collapse_blank_runs(trim_blank(lines))))
