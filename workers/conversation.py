"""One agent conversation: a PtySession, a ScreenTracker and an adapter. No Redis, no database.

Changes (message updates and status changes) are put on ``changes`` for the host to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workers.agents.base import AgentAdapter, AgentError, recognise_error
from workers.pty_session import PtySession
from workers.screen_tracker import Message, ScreenTracker, Status

PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
# How much of a message's first line ``type_turn`` looks for on the screen to see the agent took it:
# short enough to stay on one row of the input box.
MARK_CHARS = 16
# The longest single-line message every agent shows as typed (Gemini CLI shows a placeholder from
# 500 characters on, Codex from 1000).
VERBATIM_CHARS = 400
# How often an idle conversation looks at its terminal without being woken (a safety net only).
IDLE_WAKE_SECONDS = 1.0
# The longest the answer to raw keys waits to be looked at after the previous look: keys sent in a
# burst (one POST each) get one look per this interval, not one per key, and the last key's answer
# is still seen within it.
RAW_LOOK_SECONDS = 0.005


class AgentBusy(Exception):
    """The agent is not stable: it is still starting or working on the previous message."""


class AgentNotResponding(Exception):
    """The input was written but the screen never showed the agent taking it."""


@dataclass(frozen=True)
class Timing:
    snapshot_interval: float = 0.025
    settle_seconds: float = 2.0
    echo_wait: float = 2.0
    paste_quiet: float = 0.25
    enter_retry: float = 3.0
    enter_timeout: float = 15.0


@dataclass(frozen=True)
class Notice:
    """Something reported besides messages: a tool call or a plan (ACP); a failure the agent's
    screen shows (``agent_error``) or that it no longer shows (``agent_recovered``)."""

    kind: Literal["tool_call", "plan", "agent_error", "agent_recovered"]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Change:
    message: Message | None = None
    status: Status | None = None
    # With status "stable": the turn's last message as it stood then. Read later, the conversation's
    # last message could already be the next turn's reply (a fast agent answers within a few ms).
    completed: Message | None = None
    notice: Notice | None = None


class Conversation:
    def __init__(self, pty: PtySession, adapter: AgentAdapter, timing: Timing | None = None) -> None:
        self.pty = pty
        self.adapter = adapter
        self.timing = timing or Timing()
        self.tracker = ScreenTracker(
            adapter.format_message, self.timing.settle_seconds, getattr(adapter, "ready_marker", "")
        )
        self.changes: asyncio.Queue[Change] = asyncio.Queue()
        self._answers = {id(rule): rule.limit for rule in adapter.auto_responses}
        self._task: asyncio.Task[None] | None = None
        self._screen_changed = asyncio.Event()
        # The failure the current turn's screen shows, and since when (monotonic) without a break.
        self.agent_error: AgentError | None = None
        self.error_since: float | None = None
        # When a turn's text or Enter was last written: what the screen shows next is looked at at once.
        self._typed_at = 0.0

    @property
    def status(self) -> Status:
        return self.tracker.status

    @property
    def messages(self) -> list[Message]:
        return self.tracker.messages

    @property
    def exited(self) -> bool:
        return self.pty.exited

    async def exit_code(self, timeout: float) -> int | None:
        """The agent's exit status once it has exited (None if it is not reaped within ``timeout``)."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.pty.wait(), timeout)
        return None

    @property
    def workspace(self) -> Path:
        return self.pty.cwd

    def restore(self, messages: list[Message]) -> None:
        self.tracker.restore(messages)

    async def start(self) -> None:
        await self.pty.start()
        self._task = asyncio.create_task(self._watch(), name=f"screen-{self.pty.pid}")

    def watch_failure(self) -> BaseException | None:
        """What ended the screen watch, if not the agent's exit: a bug there would otherwise freeze
        the conversation (no reply, no status change) with the agent alive and the session up."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    async def stop(self, grace: float = 3.0) -> None:
        await self.pty.terminate(grace)
        if self._task:
            self._task.cancel()
            # Without raising what ended it: ``watch_failure`` reports that.
            await asyncio.wait([self._task])

    async def _watch(self) -> None:
        last_seen = looked_at = -1.0
        while not self.pty.exited:
            now = time.monotonic()
            if self.pty.last_output != last_seen:
                last_seen, looked_at = self.pty.last_output, now
                screen = self.pty.snapshot()
                self._answer_dialogs(screen)
                self._screen_changed.set()
                for message in self.tracker.observe(screen, now):
                    self.changes.put_nowait(Change(message=message))
                self._notice_error(screen, now)
            status = self.tracker.tick(now)
            if status == "stable":
                self.changes.put_nowait(Change(status=status, completed=self.tracker.completed()))
            elif status:
                self.changes.put_nowait(Change(status=status))
            if self.tracker.status == "stable" and self.pty.last_output == last_seen:
                # An idle agent: sleep until the terminal is touched (hundreds share one loop).
                self.pty.activity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.pty.activity.wait(), IDLE_WAKE_SECONDS)
            else:
                await self._until_output(last_seen, looked_at)

    async def _until_output(self, last_seen: float, looked_at: float) -> None:
        """While the agent works: wake for its next output, or after a snapshot interval to move the
        settle clock on. A look costs a screen render (~1.5 ms), so output the agent draws by itself
        (a TUI redraws in bursts) is looked at once per interval, and the answer to raw keys once
        per ``RAW_LOOK_SECONDS`` (a client may send a key per request, hundreds a second); the
        answer to a typed turn is looked at as soon as it arrives, which is what the reply's first
        byte waits for."""
        interval = self.timing.snapshot_interval
        self.pty.activity.clear()
        if self.pty.last_output == last_seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pty.activity.wait(), interval)
        if self.pty.last_input < looked_at:
            pause = interval
        elif self._typed_at < looked_at:
            pause = RAW_LOOK_SECONDS
        else:
            return
        await asyncio.sleep(max(0.0, looked_at + pause - time.monotonic()))

    def _notice_error(self, screen: str, now: float) -> None:
        """Reports a failure line of the current turn when it appears or says something new, and
        its end; an error of an earlier turn that is still in view is not this turn's."""
        found = recognise_error(self.adapter, self.tracker.turn_region(screen))
        if found is None:
            if self.agent_error is not None:
                self.agent_error = self.error_since = None
                self.changes.put_nowait(Change(notice=Notice("agent_recovered", {})))
            return
        if self.agent_error is None:
            self.error_since = now
        elif found.key == self.agent_error.key:
            self.agent_error = found
            return
        self.agent_error = found
        payload = {"level": found.level, "message": found.message, "kind": found.kind}
        self.changes.put_nowait(Change(notice=Notice("agent_error", payload)))

    def _answer_dialogs(self, screen: str) -> None:
        for rule in self.adapter.auto_responses:
            if self._answers[id(rule)] > 0 and rule.pattern.search(screen):
                self._answers[id(rule)] -= 1
                self.pty.write(rule.keys)

    async def _screen_change(self, timeout: float) -> bool:
        self._screen_changed.clear()
        try:
            await asyncio.wait_for(self._screen_changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _screen_differs(self, screen: str, timeout: float) -> bool:
        """Whether the screen shows something other than ``screen`` within ``timeout``. Output that
        leaves it alike (Aider moves the cursor and waits for the model) is no reason to press
        Enter again: each extra Enter would be an empty message."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not await self._screen_change(left):
                return False
            if self.pty.snapshot() != screen:
                return True
        return False

    async def send_user(self, text: str, reopen: bool = False) -> Message:
        """Type a message the way the agent expects; returns once the agent visibly took it."""
        user = self.open_turn(text, reopen)
        await self.type_turn(user.content)
        return user

    def open_turn(self, text: str, reopen: bool = False) -> Message:
        """Record the user's message (and its reply, empty) before it is typed; see
        ``ScreenTracker.begin_user_message`` for ``reopen``."""
        text = text.strip()
        if not text:
            raise ValueError("message content is empty")
        if self.status != "stable":
            raise AgentBusy("the agent is busy; wait until its status is stable")
        user, _ = self.tracker.begin_user_message(text, self.pty.snapshot(), time.monotonic(), reopen)
        # Busy first: a client that sees the user message and posts again must already get a 409.
        self.changes.put_nowait(Change(status="running"))
        self.changes.put_nowait(Change(message=user))
        return user

    async def type_turn(self, text: str) -> None:
        """Type the opened turn's message; returns once the agent visibly took it."""
        try:
            await self._type_message(text)
        finally:
            self.tracker.taken(time.monotonic())

    async def _type_message(self, text: str) -> None:
        body = text.encode()
        deadline = time.monotonic() + self.timing.enter_timeout
        await self._until_pasted(
            text, PASTE_START + body + PASTE_END if self.adapter.bracketed_paste else body, deadline
        )
        if self.adapter.bracketed_paste:
            # From the paste's echo, not from our write: the TUI's clock starts when it reads it.
            await asyncio.sleep(self.adapter.paste_enter_delay)
        echoed = self.pty.snapshot()
        while True:
            self._type(b"\r")
            if await self._screen_differs(echoed, self.timing.enter_retry):
                return
            if time.monotonic() >= deadline:
                raise AgentNotResponding(
                    f"the agent did not react to the message within {self.timing.enter_timeout:g} s"
                )

    def _type(self, data: bytes) -> None:
        self.pty.write(data)
        self._typed_at = self.pty.last_input

    async def _until_pasted(self, text: str, typed: bytes, deadline: float) -> None:
        """Types ``typed`` (the message) and waits until the agent has read it and shown it. An
        Enter written sooner reaches a TUI that was not scheduled meanwhile (a loaded host) in the
        same read as the text, where Gemini CLI takes it as part of the paste and not as a submit;
        the late echo of the text then passed for the agent taking the message, and it stayed in
        the input box for good.

        Shown: the screen holds the message's first characters once more than before. A short
        single line is shown as it is by every agent, so nothing else will do: the screen changes
        for other reasons too (a status line, an MCP server coming up) while the agent has not read
        the message yet. Such a line the agent redrew its screen over and then stayed still for a
        settle window without showing was dropped (Gemini CLI resuming a session clears its input
        box after it looked ready for a while on a loaded host): it is typed again. Not when the
        screen stays as it was, which is an agent not scheduled yet that will still read it.
        A longer message may be shown as a placeholder (Gemini CLI, Codex, Claude Code): for it,
        the screen changed, then stayed still for ``paste_quiet`` (or ``echo_wait`` went by)
        also counts."""
        mark = text.splitlines()[0].strip()[:MARK_CHARS]
        verbatim = "\n" not in text and len(text) <= VERBATIM_CHARS
        before = self.pty.snapshot()
        self._type(typed)
        shown = before.count(mark)
        changed_at: float | None = None
        while (now := time.monotonic()) < deadline:
            screen = self.pty.snapshot()
            if screen.count(mark) > shown:
                return
            if changed_at is None and screen != before:
                changed_at = now
            if changed_at is None:
                await self._screen_change(deadline - now)
            elif verbatim:
                quiet = min(self.timing.settle_seconds, deadline - now)
                if not await self._screen_change(quiet) and time.monotonic() < deadline:
                    before, changed_at = self.pty.snapshot(), None
                    shown = before.count(mark)
                    self._type(typed)
            else:
                quiet = min(self.timing.paste_quiet, changed_at + self.timing.echo_wait - now)
                if quiet <= 0 or not await self._screen_change(quiet):
                    return

    def send_raw(self, data: bytes) -> None:
        """Keystrokes straight to the terminal (Esc, arrows, Ctrl keys); not recorded."""
        self.tracker.touch()
        self.pty.write(data)

    async def wait_stable(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.status != "stable":
            if time.monotonic() >= deadline or self.pty.exited:
                raise TimeoutError("the agent did not become stable")
            await asyncio.sleep(self.timing.snapshot_interval)
