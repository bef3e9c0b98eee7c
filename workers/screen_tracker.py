"""Screen snapshots → status and chat messages. Knows only text, never an agent or Redis.

Like coder/agentapi: message 0 is the agent's start-up screen; when the user sends input the
screen at that moment becomes the baseline, and the agent's message is what the screen shows
beyond the baseline (lines inserted or replaced, which also covers scrolling), formatted by the
adapter. The last agent message is updated in place while it grows. The agent is ``stable`` once
the screen has been still for the settle window, ``running`` otherwise.

Once the agent has settled after its start or a turn, a redraw that changes no message (a footer
hint, a tip, a timer a TUI updates by itself) does not make it ``running`` again: only input or a
change to what it says does. Otherwise a client sees a running→stable cycle it did not cause and
its message meanwhile gets a 409, and the settled reply is "completed" a second time.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from events.envelope import rfc3339

Status = Literal["running", "stable"]
Formatter = Callable[[str, str], str]
# How long a start-up screen without the adapter's ready marker may stay still before it counts
# as settled anyway: a CLI that shows a prompt of its own instead of its input box must not keep
# the session "running" for good.
START_GRACE_SECONDS = 20.0


@dataclass
class Message:
    id: int
    role: Literal["user", "agent"]
    content: str
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_payload(self) -> dict[str, object]:
        return {"id": self.id, "role": self.role, "content": self.content, "time": rfc3339(self.time)}


def new_lines(baseline: str, screen: str) -> str:
    """The lines of ``screen`` that are not part of ``baseline``, in screen order."""
    before, after = baseline.splitlines(), screen.splitlines()
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    added: list[str] = []
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag in ("insert", "replace"):
            added.extend(after[j1:j2])
    return "\n".join(added)


class ScreenTracker:
    def __init__(
        self, format_message: Formatter, settle_seconds: float = 2.0, ready_marker: str = ""
    ) -> None:
        self.format_message = format_message
        self.settle_seconds = settle_seconds
        # Text the agent's screen shows once it takes input (its input box). Before the first input,
        # a still screen without it is a CLI still starting: on a loaded host Codex prints a warning
        # and then draws nothing for seconds, and a prompt typed then goes nowhere.
        self.ready_marker = ready_marker
        self.messages: list[Message] = [Message(0, "agent", "")]
        self.status: Status = "running"
        self._screen = ""
        self._changed_at: float | None = None
        self._baseline: str | None = None
        self._input = ""
        # A recovered conversation: the screen answers nothing until the user types, and the new
        # agent's start-up screen is no message (it would be a second banner in the transcript).
        self._resumed = False
        # Whether any screen change counts as work: from the start or an input until the next settle.
        self._armed = True
        # The last message a settle completed, as it was: a later settle with nothing new is no completion.
        self._completed: tuple[int, str] | None = None
        # A user message is being typed and the agent has not visibly taken it yet: no settle.
        self._typing = False

    def observe(self, screen: str, now: float) -> list[Message]:
        """Feed a new snapshot; returns the messages whose content changed."""
        updated: list[Message] = []
        if screen != self._screen or self._changed_at is None:
            self._screen = screen
            message = self.messages[-1]
            if message.role == "agent" and not self._resumed:
                content = self.format_message(self.turn_region(screen), self._input)
                if content != message.content:
                    message.content = content
                    updated.append(message)
                    self._armed = True
            if self._armed or self._changed_at is None:
                self._changed_at = now
        return updated

    def touch(self) -> None:
        """Keystrokes were sent: what the screen does next is the agent's answer to them."""
        self._armed = True

    def turn_region(self, screen: str) -> str:
        """What of ``screen`` belongs to the current turn: all of it before the first input."""
        return screen if self._baseline is None else new_lines(self._baseline, screen)

    def tick(self, now: float) -> Status | None:
        """Advance the settle clock; returns the new status when it changed."""
        if self._changed_at is None or not self._screen.strip():
            # Nothing drawn yet: the agent is still starting, however long the screen stays blank.
            return None
        if self._typing:
            # An agent not scheduled for a while (a loaded host) leaves its screen still before it
            # reads the message: that is no finished turn with an empty reply.
            return None
        still = now - self._changed_at
        starting = (
            self._baseline is None and self.ready_marker not in self._screen and still < START_GRACE_SECONDS
        )
        status: Status = "stable" if still >= self.settle_seconds and not starting else "running"
        changed = status if status != self.status else None
        self.status = status
        if status == "stable":
            self._armed = False
        return changed

    def completed(self) -> Message | None:
        """At a settle: the message it completes, as it stands now (none for a recovered
        conversation that was not typed to: its last message was completed by its previous host,
        nor for a message a settle already completed as it is)."""
        last = self.messages[-1]
        if self._resumed or self._completed == (last.id, last.content):
            return None
        self._completed = (last.id, last.content)
        return replace(last)

    def begin_user_message(
        self, text: str, screen_before: str, now: float, reopen: bool = False
    ) -> tuple[Message, Message]:
        """Record the user's message and open the agent's reply against the current screen.

        ``reopen``: the message is the stored one of a turn whose reply never completed (its host
        died); it keeps its id and its reply's id, so no id ever names two messages.
        The settle clock restarts here: the agent has not drawn anything yet, and a tick before it
        does must not call it stable again on the strength of the old, quiet screen."""
        users = [m.id for m in self.messages if m.role == "user"]
        if reopen and users:
            del self.messages[users[-1] :]
        user = Message(len(self.messages), "user", text)
        agent = Message(len(self.messages) + 1, "agent", "")
        self.messages += [user, agent]
        self._resumed = False
        self._baseline = screen_before
        self._input = text
        self._changed_at = now
        self._armed = True
        self._typing = True
        self.status = "running"
        return user, agent

    def taken(self, now: float) -> None:
        """The opened turn's message was typed (or typing it gave up): the settle clock runs again,
        from here, since the screen has been still only because the agent had not read it."""
        self._typing = False
        self._changed_at = now

    def restore(self, messages: list[Message]) -> None:
        """Continue a conversation recovered from storage: new messages get the next ids."""
        if messages:
            self.messages = list(messages)
            self._resumed = True
