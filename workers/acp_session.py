"""An agent that speaks the Agent Client Protocol (JSON-RPC over its stdio), beside the PTY transport.

The agent says what it is doing — message chunks, tool calls, plans, permission requests, the end
of a turn — so there is no screen to read and no settle window: a turn ends when ``session/prompt``
returns. ``AcpConversation`` offers the host what ``Conversation`` offers (``changes``, ``status``,
``messages``, ``send_user``, ``open_turn``, ``type_turn``, ``send_raw``, ``wait_stable``,
``restore``), so the session host drives either transport the same way. No Redis, no database: permission requests go to a callback.

File system and terminal requests (``fs/*``, ``terminal/*``) are declined — the client advertises
neither capability — because the agent runs confined to its workspace and does its own I/O there;
served by the host, the same requests would run outside that confinement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from acp import PROTOCOL_VERSION, Client, RequestError, connect_to_agent, text_block
from acp.connection import StreamDirection, StreamEvent
from acp.core import ClientSideConnection
from acp.schema import (
    AcpMcpServer,
    AgentMessageChunk,
    AgentPlanUpdate,
    AllowedOutcome,
    ClientCapabilities,
    DeniedOutcome,
    HttpMcpServer,
    Implementation,
    McpServerStdio,
    PermissionOption,
    RequestPermissionResponse,
    SseMcpServer,
    ToolCallProgress,
    ToolCallStart,
    ToolCallUpdate,
)

from workers.agents.base import AgentError
from workers.conversation import AgentBusy, Change, Notice
from workers.pty_session import ResourceLimits, die_with_parent
from workers.sandbox import Sandbox
from workers.screen_tracker import Message, Status

log = logging.getLogger(__name__)

# What ACP's session/new and session/load take; this platform hands agents its HTTP gateway only.
McpServer = HttpMcpServer | SseMcpServer | AcpMcpServer | McpServerStdio

# JSON-RPC lines carry whole files and tool outputs: far longer than asyncio's 64 KiB default.
LINE_LIMIT = 16 * 1024 * 1024
CLIENT_INFO = Implementation(name="agentapi", title="agentapi", version="1")
# Keystrokes that interrupt a PTY agent; over ACP they become session/cancel.
INTERRUPT_KEYS = (b"\x1b", b"\x03")

# (tool call as sent by the agent, its options) → the chosen option id, or None for cancelled.
PermissionCallback = Callable[[dict[str, Any], list[dict[str, Any]]], Awaitable[str | None]]


class AcpStartFailed(OSError):
    """The agent did not initialize or open its session."""


class AcpConversation:
    def __init__(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        limits: ResourceLimits | None = None,
        mcp_servers: Sequence[McpServer] = (),
        ask_permission: PermissionCallback | None = None,
        session_meta: dict[str, Any] | None = None,
        resume_session_id: str | None = None,
        stderr_path: Path | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.argv = argv
        self.sandbox = sandbox
        self.cwd = cwd
        self.env = env
        self.limits = limits or ResourceLimits()
        self.mcp_servers = list(mcp_servers)
        self.ask_permission = ask_permission
        # ``_meta`` of session/new and session/load (the agent's own options, e.g. its system prompt).
        self.session_meta = session_meta or {}
        self.resume_session_id = resume_session_id
        self.stderr_path = stderr_path
        self.changes: asyncio.Queue[Change] = asyncio.Queue()
        self.messages: list[Message] = [Message(0, "agent", "")]
        self.status: Status = "running"
        self.agent_session_id: str | None = None
        # Why a recovered conversation started afresh instead of loading the agent's session.
        self.resume_note: str | None = None
        # An ACP agent reports a failed turn as an error answer, not as a screen to recognise.
        self.agent_error: AgentError | None = None
        self.error_since: float | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._conn: ClientSideConnection | None = None
        self._turn: asyncio.Task[None] | None = None
        self._exited = asyncio.Event()
        self._waiter: asyncio.Task[None] | None = None
        # Updates are handled in tasks of their own; a turn ends only once all received are handled.
        self._updates_received = 0
        self._updates_handled = 0
        self._caught_up = asyncio.Event()
        # From session/load until the next prompt: the agent's replay of the conversation, which the
        # restored messages already hold. Not only until load answers: Gemini CLI answers before it
        # has streamed the whole history, so late replayed chunks would be appended to the reply.
        self._replaying = False
        # Permission questions waiting for an answer; a cancelled turn withdraws them.
        self._asking: set[asyncio.Future[str | None]] = set()

    # -- what the host reads ------------------------------------------------------------------

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    async def exit_code(self, timeout: float) -> int | None:
        """The agent's exit status once it has exited (None if it is not reaped within ``timeout``)."""
        if self._proc is None:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._proc.wait(), timeout)
        return None

    @property
    def workspace(self) -> Path:
        return self.cwd

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def restore(self, messages: list[Message]) -> None:
        """Continue a conversation recovered from storage: new messages get the next ids."""
        if messages:
            self.messages = list(messages)

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        host_pid, limits = os.getpid(), self.limits

        def in_child() -> None:
            die_with_parent(host_pid)
            limits.apply()

        argv = self.sandbox.wrap(self.argv, self.cwd) if self.sandbox else self.argv
        stderr = self.stderr_path.open("ab") if self.stderr_path else None
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr or asyncio.subprocess.DEVNULL,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=in_child,
                limit=LINE_LIMIT,
                pass_fds=self.sandbox.pass_fds if self.sandbox else (),
            )
        finally:
            if stderr:
                stderr.close()  # the child has its own descriptor
        if self.sandbox:
            try:
                await self.sandbox.attach()
            except BaseException:
                await self.stop()
                raise
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._waiter = asyncio.create_task(self._wait_exit(), name=f"acp-exit-{self._proc.pid}")
        self._conn = connect_to_agent(
            # ACP's Client protocol also lists file-system and terminal methods; the connection
            # answers method-not-found for those a client lacks, and this one grants neither.
            cast(Client, _Client(self)),
            self._proc.stdin,
            self._proc.stdout,
            observers=[self._count_update],
        )
        try:
            init = await self._conn.initialize(
                protocol_version=PROTOCOL_VERSION,
                client_capabilities=ClientCapabilities(),
                client_info=CLIENT_INFO,
            )
            await self._open_session(bool(init.agent_capabilities and init.agent_capabilities.load_session))
        except (RequestError, ConnectionError, OSError) as exc:
            await self.stop()
            raise AcpStartFailed(f"the agent did not start its ACP session: {exc}") from exc
        info = init.agent_info
        if len(self.messages) > 1:
            # Recovered: its last message was completed (or is reopened) by the host, not here.
            self.status = "stable"
            self.changes.put_nowait(Change(status="stable"))
            return
        name = f"{info.title or info.name} {info.version}" if info else " ".join(self.argv[:1])
        self.messages[0].content = f"{name} (Agent Client Protocol)"
        self.changes.put_nowait(Change(message=self.messages[0]))
        self._settle()

    async def _open_session(self, can_load: bool) -> None:
        assert self._conn is not None
        cwd = str(self.cwd)
        if self.resume_session_id:
            if can_load:
                self._replaying = True
                try:
                    await self._conn.load_session(
                        cwd=cwd,
                        session_id=self.resume_session_id,
                        mcp_servers=self.mcp_servers,
                        **self.session_meta,
                    )
                    self.agent_session_id = self.resume_session_id
                    return
                except RequestError as exc:
                    self.resume_note = f"the agent could not load its session: {exc}"
                finally:
                    await self._catch_up()
            else:
                self.resume_note = "the agent does not support session/load"
        elif self.messages[1:]:
            self.resume_note = "the agent's session id was lost; it starts afresh with no memory of the turns"
        session = await self._conn.new_session(cwd=cwd, mcp_servers=self.mcp_servers, **self.session_meta)
        self.agent_session_id = session.session_id

    async def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the agent's process group (ACP agents need not exit on stdin EOF), SIGKILL later."""
        if self._turn and not self._turn.done():
            self._turn.cancel()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        proc = self._proc
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                if proc.returncode is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._exited.wait()), wait)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._waiter:
            with contextlib.suppress(asyncio.CancelledError):
                await self._waiter

    async def _wait_exit(self) -> None:
        assert self._proc is not None
        await self._proc.wait()
        self._exited.set()

    # -- turns --------------------------------------------------------------------------------

    async def send_user(self, text: str, reopen: bool = False) -> Message:
        user = self.open_turn(text, reopen)
        await self.type_turn(user.content)
        return user

    def open_turn(self, text: str, reopen: bool = False) -> Message:
        """Record the user's message and its reply (empty) before the prompt is sent. ``reopen``:
        the message is the stored one of a turn whose reply never completed (its host died); it
        keeps its id and its reply's id."""
        text = text.strip()
        if not text:
            raise ValueError("message content is empty")
        if self.status != "stable" or (self._turn and not self._turn.done()):
            raise AgentBusy("the agent is busy; wait until its status is stable")
        users = [m.id for m in self.messages if m.role == "user"]
        if reopen and users:
            del self.messages[users[-1] :]
        user = Message(len(self.messages), "user", text)
        self.messages += [user, Message(len(self.messages) + 1, "agent", "")]
        self.status = "running"
        # Busy first: a client that sees the user message and posts again must already get a 409.
        self.changes.put_nowait(Change(status="running"))
        self.changes.put_nowait(Change(message=user))
        return user

    async def type_turn(self, text: str) -> None:
        """Send the opened turn's prompt; returns at once (the reply arrives as changes)."""
        self._replaying = False
        self._turn = asyncio.create_task(self._prompt(text, self.messages[-1]), name=f"acp-turn-{self.pid}")

    async def _prompt(self, text: str, reply: Message) -> None:
        assert self._conn is not None and self.agent_session_id is not None
        try:
            await self._conn.prompt(session_id=self.agent_session_id, prompt=[text_block(text)])
        except RequestError as exc:
            log.warning("ACP prompt failed in %s: %s", self.cwd, exc)
            if not reply.content:
                reply.content = f"(the agent failed: {exc})"
                self.changes.put_nowait(Change(message=reply))
        except ConnectionError:
            return  # the agent is gone; the host sees it exit
        await self._catch_up()
        self._settle()

    def _settle(self) -> None:
        self.status = "stable"
        last = self.messages[-1]
        if last.role == "agent" and not last.content and len(self.messages) > 1:
            # A turn that said nothing (a refused tool ends it) leaves no message: ids stay list indexes.
            self.messages.pop()
            self.changes.put_nowait(Change(status="stable"))
            return
        self.changes.put_nowait(Change(status="stable", completed=replace(last)))

    async def cancel(self) -> None:
        """session/cancel: the agent ends the turn with stop reason ``cancelled``."""
        if self._conn is None or self.agent_session_id is None or not self._turn or self._turn.done():
            return
        for asking in self._asking:
            asking.cancel()
        with contextlib.suppress(RequestError, ConnectionError):
            await self._conn.cancel(session_id=self.agent_session_id)

    def send_raw(self, data: bytes) -> None:
        """There is no terminal: Esc and Ctrl-C cancel the turn, other keystrokes mean nothing."""
        if data in INTERRUPT_KEYS:
            asyncio.get_running_loop().create_task(self.cancel(), name="acp-cancel")

    async def wait_stable(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.status != "stable":
            if time.monotonic() >= deadline or self.exited:
                raise TimeoutError("the agent did not become stable")
            await asyncio.sleep(0.02)

    # -- updates from the agent ---------------------------------------------------------------

    def _count_update(self, event: StreamEvent) -> None:
        if event.direction is StreamDirection.INCOMING and event.message.get("method") == "session/update":
            self._updates_received += 1
            self._caught_up.clear()

    async def _catch_up(self) -> None:
        while self._updates_handled < self._updates_received and not self.exited:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._caught_up.wait(), 0.5)

    def on_update(self, update: object) -> None:
        try:
            if not self._replaying:
                self._apply(update)
        finally:
            self._updates_handled += 1
            if self._updates_handled >= self._updates_received:
                self._caught_up.set()

    def _apply(self, update: object) -> None:
        if isinstance(update, AgentMessageChunk):
            text = getattr(update.content, "text", None)
            reply = self.messages[-1]
            if text and reply.role == "agent" and len(self.messages) > 1:
                reply.content += text
                self.changes.put_nowait(Change(message=reply))
        elif isinstance(update, ToolCallStart | ToolCallProgress):
            self.changes.put_nowait(Change(notice=Notice("tool_call", tool_call_payload(update))))
        elif isinstance(update, AgentPlanUpdate):
            entries = [entry.model_dump(mode="json", exclude_none=True) for entry in update.entries]
            self.changes.put_nowait(Change(notice=Notice("plan", {"entries": entries})))

    async def on_permission(self, tool_call: ToolCallUpdate, options: list[PermissionOption]) -> str | None:
        if self.ask_permission is None:
            return None
        asking = asyncio.ensure_future(
            self.ask_permission(
                tool_call_payload(tool_call),
                [option.model_dump(mode="json", by_alias=False, exclude_none=True) for option in options],
            )
        )
        self._asking.add(asking)
        try:
            await asyncio.wait({asking})
        finally:
            self._asking.discard(asking)
            asking.cancel()
        # A question the cancel of its turn withdrew is answered "cancelled", as ACP asks of a client.
        return None if asking.cancelled() else asking.result()


def tool_call_payload(update: ToolCallStart | ToolCallProgress | ToolCallUpdate) -> dict[str, Any]:
    """What clients see of a tool call: id, title, kind, status and the raw input and output."""
    payload = {
        "tool_call_id": update.tool_call_id,
        "title": update.title,
        "kind": update.kind,
        "status": update.status,
        "raw_input": update.raw_input,
        "raw_output": update.raw_output,
        "locations": [place.model_dump(mode="json", exclude_none=True) for place in update.locations or []]
        or None,
    }
    return {key: value for key, value in payload.items() if value is not None}


class _Client:
    """The ACP client side: updates and permission requests go to the conversation."""

    def __init__(self, conversation: AcpConversation) -> None:
        self._conversation = conversation

    def on_connect(self, conn: object) -> None:
        pass

    async def session_update(self, session_id: str, update: object, **_: Any) -> None:
        self._conversation.on_update(update)

    async def request_permission(
        self, session_id: str, tool_call: ToolCallUpdate, options: list[PermissionOption], **_: Any
    ) -> RequestPermissionResponse:
        chosen = await self._conversation.on_permission(tool_call, options)
        if chosen is None:
            return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        return RequestPermissionResponse(outcome=AllowedOutcome(outcome="selected", option_id=chosen))
