"""Real processes in real PTYs: the echo test agent through PtySession, ScreenTracker and the
custom adapter's formatting."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.waiting import until
from workers.agents.base import LaunchContext
from workers.agents.codex import COMPOSER, CodexAdapter
from workers.agents.custom import CustomAdapter
from workers.conversation import RAW_LOOK_SECONDS, AgentBusy, Conversation, Timing
from workers.pty_session import PtySession, ResourceLimits
from workers.screen_tracker import START_GRACE_SECONDS, Message, ScreenTracker

ECHO_AGENT = Path(__file__).parent / "agents" / "echo_agent.py"
TIMING = Timing(snapshot_interval=0.01, settle_seconds=0.4, echo_wait=1.0, enter_retry=1.0, enter_timeout=5.0)
BASE_ENV = {"PATH": "/usr/bin:/bin", "TERM": "xterm-256color", "LANG": "C.UTF-8"}


async def start_echo(tmp_path: Path, *args: str, limits: ResourceLimits | None = None) -> Conversation:
    pty = PtySession([sys.executable, str(ECHO_AGENT), *args], cwd=tmp_path, env=BASE_ENV, limits=limits)
    conversation = Conversation(pty, CustomAdapter(), TIMING)
    await conversation.start()
    await conversation.wait_stable(10)
    return conversation


async def ask(conversation: Conversation, text: str) -> str:
    await conversation.send_user(text)
    await conversation.wait_stable(20)
    return conversation.messages[-1].content


async def test_start_up_screen_is_message_zero(tmp_path: Path) -> None:
    conversation = await start_echo(tmp_path)
    try:
        assert conversation.messages[0].role == "agent"
        assert conversation.messages[0].content == "Echo Agent 1.0 — a test agent"
    finally:
        await conversation.stop()


async def test_twenty_messages_in_a_row(tmp_path: Path) -> None:
    conversation = await start_echo(tmp_path)
    statuses: list[str] = []
    try:
        for number in range(20):
            assert await ask(conversation, f"message number {number}") == f"echo: message number {number}"
        while not conversation.changes.empty():
            change = conversation.changes.get_nowait()
            if change.status:
                statuses.append(change.status)
        roles = [m.role for m in conversation.messages]
        assert roles == ["agent"] + ["user", "agent"] * 20
        assert [m.id for m in conversation.messages] == list(range(41))
        assert [m.content for m in conversation.messages[1::2]] == [f"message number {n}" for n in range(20)]
        assert statuses.count("running") >= 19 and statuses[-1] == "stable"
    finally:
        await conversation.stop()


async def test_multi_line_input_is_pasted_whole(tmp_path: Path) -> None:
    conversation = await start_echo(tmp_path)
    try:
        assert await ask(conversation, "  first part and second part  ") == "echo: first part and second part"
    finally:
        await conversation.stop()


async def test_enter_waits_until_the_agent_has_read_the_paste(tmp_path: Path) -> None:
    """A TUI not scheduled for a while (a loaded host) that reads the paste and the Enter in one go
    takes the Enter as a line break (Gemini CLI), and its late echo of the text looked like the
    agent taking the message: the Enter goes only once the agent has shown the text."""
    conversation = await start_echo(tmp_path, "--fast-return")
    assert conversation.pty.pid is not None
    os.killpg(conversation.pty.pid, signal.SIGSTOP)
    asyncio.get_running_loop().call_later(
        TIMING.echo_wait * 1.5, os.killpg, conversation.pty.pid, signal.SIGCONT
    )
    try:
        assert await ask(conversation, "read late") == "echo: read late"
        completed = []
        while not conversation.changes.empty():
            change = conversation.changes.get_nowait()
            if change.completed is not None and change.completed.id > 0:
                completed.append(change.completed.content)
        # The still screen while the agent was stopped was no finished turn with an empty reply.
        assert completed == ["echo: read late"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(conversation.pty.pid, signal.SIGCONT)
        await conversation.stop()


class _UnreadableAdapter(CustomAdapter):
    def format_message(self, screen: str, user_input: str) -> str:
        if "echo: unreadable" in screen:
            raise RuntimeError("this screen cannot be read")
        return super().format_message(screen, user_input)


async def test_a_screen_watch_that_fails_says_so(tmp_path: Path) -> None:
    """A bug in reading the screen ends the watch: the host asks ``watch_failure`` and ends the
    session saying why, instead of a conversation frozen with its agent alive."""
    pty = PtySession([sys.executable, str(ECHO_AGENT)], cwd=tmp_path, env=BASE_ENV)
    conversation = Conversation(pty, _UnreadableAdapter(), TIMING)
    await conversation.start()
    try:
        await conversation.wait_stable(10)
        assert conversation.watch_failure() is None
        await conversation.send_user("unreadable")
        await until(lambda: conversation.watch_failure() is not None, 10, "the watch ends")
        assert str(conversation.watch_failure()) == "this screen cannot be read"
        assert not pty.exited
    finally:
        await conversation.stop()


async def test_a_message_the_agent_dropped_while_redrawing_is_typed_again(tmp_path: Path) -> None:
    """An agent that looked ready (its input box still for a settle window) but then threw away what
    it was sent and drew its screen anew (Gemini CLI resuming a session on a loaded host): the
    message is typed again once that screen is still, instead of Enter on an empty input box."""
    conversation = await start_echo(tmp_path, "--resume-after", str(TIMING.settle_seconds * 2))
    try:
        reply = await ask(conversation, "said once")
        assert reply.splitlines()[-1] == "echo: said once", "typed again whole, not twice in one input box"
    finally:
        await conversation.stop()


async def test_slow_reply_is_updated_in_place(tmp_path: Path) -> None:
    conversation = await start_echo(tmp_path)
    try:
        await conversation.send_user("/slow 1.5 streaming words arrive one by one")
        agent_id = conversation.messages[-1].id
        await conversation.wait_stable(20)
        updates = []
        while not conversation.changes.empty():
            change = conversation.changes.get_nowait()
            if change.message and change.message.id == agent_id:
                updates.append(change.message.content)
        assert conversation.messages[-1].content == "echo: streaming words arrive one by one"
        assert len(updates) >= 1
    finally:
        await conversation.stop()


async def test_scrolled_reply_keeps_its_tail(tmp_path: Path) -> None:
    conversation = await start_echo(tmp_path)
    try:
        reply = await ask(conversation, "/lines 200")
        assert reply.splitlines()[-1] == "line 200"
        assert "╭" not in reply and "shortcuts" not in reply
    finally:
        await conversation.stop()


async def test_busy_agent_refuses_input_and_raw_keys_reach_it(tmp_path: Path) -> None:
    conversation = await start_echo(tmp_path)
    try:
        await conversation.send_user("/slow 2 still typing the answer")
        with pytest.raises(AgentBusy):
            await conversation.send_user("too early")
        await conversation.wait_stable(20)
        count = len(conversation.messages)
        conversation.send_raw(b"\x03")
        await until(lambda: "^C interrupted" in conversation.pty.snapshot(), 10)
        assert len(conversation.messages) == count, "raw keys are not recorded as messages"
    finally:
        await conversation.stop()


async def test_keys_in_a_row_are_looked_at_once_per_interval_and_the_last_is_seen(tmp_path: Path) -> None:
    """Keys one after another, each as soon as the agent has drawn the last (a client posting a
    keystroke per request): the watcher looks at their answers at most once per
    ``RAW_LOOK_SECONDS``, not once per key, and still sees the last."""
    conversation = await start_echo(tmp_path)
    looks: list[tuple[float, str]] = []
    observe = conversation.tracker.observe

    def counted(screen: str, now: float) -> list[Message]:
        looks.append((now, screen))
        return observe(screen, now)

    conversation.tracker.observe = counted  # type: ignore[method-assign]
    keys = 100
    try:
        for _ in range(keys):
            drawn = conversation.pty.last_output
            conversation.send_raw(b"x")
            deadline = time.monotonic() + 10
            while conversation.pty.last_output == drawn and time.monotonic() < deadline:
                await asyncio.sleep(0)
        await until(lambda: "│ > " + "x" * keys in looks[-1][1], 10, "the last key was seen")
        gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(looks)]
        # The event loop may wake a timer up to its clock's resolution early.
        assert min(gaps) >= RAW_LOOK_SECONDS - 0.001, (len(looks), min(gaps))
        assert len(looks) < keys
    finally:
        await conversation.stop()


def test_a_user_message_holds_the_settle_clock_until_it_is_typed() -> None:
    tracker = ScreenTracker(CustomAdapter().format_message, settle_seconds=2.0)
    tracker.observe("Echo Agent\n> ", now=0.0)
    assert tracker.tick(10.0) == "stable"
    tracker.begin_user_message("hello", "Echo Agent\n> ", now=10.0)
    # The agent has not read the message yet (a loaded host): its old, quiet screen is no reply.
    assert tracker.tick(10.5) is None and tracker.status == "running"
    assert tracker.tick(30.0) is None and tracker.status == "running"
    tracker.taken(30.0)
    assert tracker.tick(31.0) is None
    assert tracker.tick(32.0) == "stable"


def test_a_start_up_screen_without_the_input_box_is_still_starting() -> None:
    """Codex on a loaded host: a warning, then seconds with nothing else drawn; a prompt typed
    then went nowhere and the banner drawn after it ended up in the reply."""
    tracker = ScreenTracker(CodexAdapter().format_message, settle_seconds=2.0, ready_marker=COMPOSER)
    tracker.observe("WARNING: proceeding, even though we could not create PATH aliases", now=0.0)
    assert tracker.tick(5.0) is None and tracker.status == "running"
    tracker.observe(f"WARNING: proceeding\n>_ OpenAI Codex\n\n{COMPOSER} Explain this codebase", now=6.0)
    assert tracker.tick(7.0) is None and tracker.tick(8.0) == "stable"
    # A CLI that never draws it (a prompt of its own) settles after the grace period all the same.
    stuck = ScreenTracker(CodexAdapter().format_message, settle_seconds=2.0, ready_marker=COMPOSER)
    stuck.observe("Sign in with ChatGPT", now=0.0)
    assert stuck.tick(START_GRACE_SECONDS - 1) is None and stuck.tick(START_GRACE_SECONDS) == "stable"


def test_a_settled_agent_redrawing_its_chrome_stays_stable_and_is_completed_once() -> None:
    """Claude Code redraws its footer ~8 s after it starts and after a reply; that is no work."""
    tracker = ScreenTracker(CustomAdapter().format_message, settle_seconds=2.0)
    tracker.observe("Echo Agent\n> ", now=0.0)
    assert tracker.tick(2.0) == "stable" and tracker.completed() == tracker.messages[0]
    tracker.begin_user_message("hi", "Echo Agent\n> ", now=3.0)
    tracker.observe("Echo Agent\n> hi\necho: hi\n> ", now=3.1)
    tracker.taken(3.1)
    assert tracker.tick(5.5) == "stable"
    assert tracker.completed() == tracker.messages[2]
    # The footer changes, the message does not: still stable, and nothing to complete again.
    assert tracker.observe("Echo Agent\n> hi\necho: hi\n> \n  ? for shortcuts", now=8.0) == []
    assert tracker.tick(8.1) is None and tracker.status == "stable"
    assert tracker.tick(10.1) is None and tracker.completed() is None
    # What the agent says changes by itself: that is work, and its new text is completed.
    assert tracker.observe("Echo Agent\n> hi\necho: hi\nand more\n> ", now=11.0) == [tracker.messages[2]]
    assert tracker.tick(11.1) == "running"
    assert tracker.tick(13.5) == "stable" and tracker.completed() == tracker.messages[2]
    assert tracker.messages[2].content == "echo: hi\nand more"


def test_after_keystrokes_any_redraw_is_the_agents_answer() -> None:
    tracker = ScreenTracker(CustomAdapter().format_message, settle_seconds=2.0)
    tracker.observe("Echo Agent\n> ", now=0.0)
    assert tracker.tick(2.0) == "stable"
    tracker.touch()
    tracker.observe("Echo Agent\n> \n  interrupted", now=3.0)
    assert tracker.tick(3.1) == "running" and tracker.tick(5.0) == "stable"


def test_a_recovered_conversation_keeps_its_ids_and_shows_no_second_banner() -> None:
    """A new host's tracker over the stored transcript of a turn its previous host did not finish."""
    stored = [Message(0, "agent", "Echo Agent 1.0"), Message(1, "user", "hi"), Message(2, "agent", "ec")]
    tracker = ScreenTracker(CustomAdapter().format_message, settle_seconds=2.0)
    tracker.restore(stored)
    # The new agent's start-up screen: neither a message nor the completion of one.
    assert tracker.observe("Echo Agent 1.0\n> ", now=0.0) == []
    assert tracker.tick(3.0) == "stable" and tracker.completed() is None
    # The unfinished message typed again: same ids for it and its reply.
    user, reply = tracker.begin_user_message("hi", "Echo Agent 1.0\n> ", now=3.0, reopen=True)
    assert (user.id, reply.id) == (1, 2)
    tracker.observe("Echo Agent 1.0\n> hi\necho: hi\n> ", now=3.1)
    tracker.taken(3.1)
    assert [m.content for m in tracker.messages] == ["Echo Agent 1.0", "hi", "echo: hi"]
    assert tracker.tick(6.0) == "stable" and tracker.completed() == tracker.messages[2]
    # Later messages get new ids.
    assert tracker.begin_user_message("next", "", now=6.0)[0].id == 3


async def test_trust_dialog_is_answered_once(tmp_path: Path) -> None:
    conversation = await start_echo(tmp_path, "--trust-prompt")
    try:
        assert await ask(conversation, "trusted") == "echo: trusted"
    finally:
        await conversation.stop()


async def test_file_size_limit_applies_in_the_child(tmp_path: Path) -> None:
    script = "open('big', 'wb').write(b'x' * 2_000_000)"
    pty = PtySession(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=BASE_ENV,
        limits=ResourceLimits(file_size_bytes=1_000_000),
    )
    await pty.start()
    code = await asyncio.wait_for(pty.wait(), 20)
    assert code != 0
    assert (tmp_path / "big").stat().st_size <= 1_000_000


# Reads nothing until ``go`` exists in its directory, then all it was sent.
LATE_READER = """
import os, sys, time, tty
tty.setraw(0)
print("ready", end="\\r\\n", flush=True)
while not os.path.exists("go"):
    time.sleep(0.01)
got = 0
while got < int(sys.argv[1]):
    got += len(os.read(0, 65536))
print(f"took {got}", end="\\r\\n", flush=True)
time.sleep(60)
"""


async def test_input_the_agent_does_not_read_yet_waits_without_blocking_the_loop(tmp_path: Path) -> None:
    """More input than the terminal buffers: ``write`` returns at once and the rest follows as the
    agent reads (it used to spin on the event loop, which runs every session of its host, until
    the agent read; here the agent only reads once the loop has gone on)."""
    size = 1_000_000
    pty = PtySession([sys.executable, "-c", LATE_READER, str(size)], cwd=tmp_path, env=BASE_ENV)
    await pty.start()
    try:
        await until(lambda: "ready" in pty.snapshot(), 10)
        pty.write(b"x" * size)
        (tmp_path / "go").touch()
        await until(lambda: f"took {size}" in pty.snapshot(), 30)
    finally:
        await pty.terminate(grace=0)


async def test_terminate_kills_the_process_group(tmp_path: Path) -> None:
    pty = PtySession(["/bin/sh", "-c", "sleep 300 & sleep 300"], cwd=tmp_path, env=BASE_ENV)
    await pty.start()
    pgid = pty.pid
    assert pgid is not None
    await until(lambda: _group_commands(pgid).count("sleep") == 2, 10, "both sleeps run")
    await pty.terminate(grace=1.0)
    assert pty.returncode is not None
    proc = await asyncio.create_subprocess_exec(
        "ps", "-o", "stat=", "-g", str(pgid), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    alive = [stat for stat in out.decode().split() if not stat.startswith("Z")]
    assert alive == [], "no process of the group survives (zombies wait for init to reap them)"


# A host that starts an agent which ignores SIGHUP (so the PTY's hangup alone would not end it),
# prints the agent's pid and waits to be killed.
STUBBORN_AGENT = "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
HOST = f"""
import asyncio, sys
from pathlib import Path
from workers.pty_session import PtySession

async def main():
    pty = PtySession([sys.executable, "-c", {STUBBORN_AGENT!r}], cwd=Path(sys.argv[1]), env={BASE_ENV!r})
    await pty.start()
    while "ready" not in pty.snapshot():
        await asyncio.sleep(0.01)
    print(pty.pid, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def _group_commands(pgid: int) -> list[str]:
    """The command names of the processes in process group ``pgid``."""
    commands = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, fields = stat.read_text().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields.split()[2]) == pgid:
            commands.append(name.split("(", 1)[1])
    return commands


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def test_the_agent_dies_with_its_host_even_on_kill_9(tmp_path: Path) -> None:
    host = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOST,
        str(tmp_path),
        cwd=Path(__file__).parents[1],
        stdout=asyncio.subprocess.PIPE,
    )
    assert host.stdout is not None
    agent_pid = int(await asyncio.wait_for(host.stdout.readline(), 20))
    try:
        assert _running(agent_pid)
        host.kill()
        await host.wait()
        for _ in range(100):
            if not _running(agent_pid):
                break
            await asyncio.sleep(0.1)
        assert not _running(agent_pid), "the agent outlived its killed host"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent_pid, signal.SIGKILL)


async def test_fifty_sessions_in_one_loop(tmp_path: Path) -> None:
    conversations = await asyncio.gather(*(start_echo(tmp_path) for _ in range(50)))
    try:
        replies = await asyncio.gather(*(ask(c, f"hello {n}") for n, c in enumerate(conversations)))
        assert replies == [f"echo: hello {n}" for n in range(50)]
    finally:
        await asyncio.gather(*(c.stop() for c in conversations))


def test_prepare_writes_private_files(tmp_path: Path) -> None:
    import uuid

    ctx = LaunchContext(
        session_id=uuid.uuid4(),
        org_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        workspace=tmp_path,
        home=tmp_path / ".home",
        system_prompt="be brief",
        mcp_gateway_url="http://127.0.0.1:1/mcp",
        mcp_gateway_token="session-token",
    )
    adapter = CustomAdapter()
    adapter.prepare(ctx)
    env = adapter.environment(ctx)
    assert Path(env["AGENTAPI_SYSTEM_PROMPT_FILE"]).read_text() == "be brief"
    assert oct(Path(env["AGENTAPI_MCP_CONFIG"]).stat().st_mode & 0o777) == "0o600"


async def test_a_stable_change_carries_the_turn_it_completed(tmp_path: Path) -> None:
    # Changes are read only after the next reply is on screen, as a busy reporter would: each
    # "stable" must still name the message that was last when it happened, not the newest one.
    conversation = await start_echo(tmp_path)
    try:
        assert await ask(conversation, "first turn") == "echo: first turn"
        completed = []
        while not conversation.changes.empty():
            change = conversation.changes.get_nowait()
            if change.status == "stable":
                completed.append(change.completed)
        assert [(m.id, m.content) for m in completed if m] == [
            (0, "Echo Agent 1.0 — a test agent"),
            (2, "echo: first turn"),
        ]
    finally:
        await conversation.stop()
