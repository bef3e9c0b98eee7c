"""The PTY host of one session: runs its agent in a Conversation and connects it to the platform.

Inputs come from the session's input stream, in order, one at a time; results go to the session's
event log (``message.updated`` while a reply grows, ``message.completed`` and ``session.status``
when the screen settles). A user message is consumed when its turn is durable, not when it is read:
the message is stored as soon as it is typed, its reply as it grows (every ``PARTIAL_STORE_SECONDS``)
and when it completes, each time with the row's input cursor in the same transaction, so a host
that dies mid-turn leaves a cursor from which the next host types that message again, into the same
turn (same message ids), and loses none of the text that was shown. The host keeps a state hash
in Redis (status, host, heartbeat) that expires if the host dies, so the ingress knows whether the
agent can take a message. The conversation ends on a stop request, the agent's exit, the idle
timeout or the maximum lifetime, and the reason is reported.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from acp.schema import HttpHeader, HttpMcpServer
from dramatiq import Retry
from pydantic import SecretStr, ValidationError
from redis.exceptions import RedisError
from sqlmodel import col, select, update
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from events import gateway_tokens, replies
from events.audit import audit_event
from events.envelope import Event, EventType, rfc3339
from events.gateway_tokens import TokenHolder
from events.payloads import (
    Interrupt,
    PermissionChoice,
    RawKeys,
    SessionInput,
    SessionRequest,
    Stop,
    Upload,
    UserMessage,
    parse_input,
)
from events.publisher import publish
from events.session_state import queue_prompt, set_detail, set_status, turn_taken
from schemas.agent_permissions import DEFAULT_KINDS, PermissionPolicy
from schemas.agent_permissions import SETTINGS_KEY as PERMISSIONS_KEY
from schemas.crypto import DecryptionError, KeyRingError
from schemas.db import TenantContext, dialect_insert, tenant_transaction
from schemas.settings import UPLOADS_DIR, Settings
from schemas.tables import SessionMessage, TenantSettings, UserSession
from schemas.tenant_secrets import open_tenant_secrets
from services.outages import default_outage_exceptions
from services.sessions.lifecycle import END_REASON_MAX
from workers.acp_permissions import PermissionDesk
from workers.acp_session import AcpConversation
from workers.agents import AdapterUnavailable, get_adapter
from workers.agents.base import AgentAdapter, LaunchContext, interrupt_keys
from workers.agents.gateway import gateway_headers
from workers.context import WorkerContext
from workers.conversation import AgentBusy, AgentNotResponding, Change, Conversation, Timing
from workers.pty_session import PtySession, ResourceLimits
from workers.sandbox import (
    Endpoint,
    Sandbox,
    forwarded_endpoints,
    give_to,
    remove_files_holding,
    required,
    sandbox_uid,
)
from workers.screen_mirror import mirror_screen
from workers.screen_tracker import Message
from workers.sidecars import SidecarProcess
from workers.workspace_sync import workspace_store_for

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.5
STATE_TTL_SECONDS = 10
# The idempotency lease of a live host; short, so a dead host's session is taken over quickly.
LEASE_SECONDS = 5
DISK_CHECK_SECONDS = 2.0
# How soon a handed-over session is offered to the other workers.
HANDOVER_DELAY_MS = 200
# How often a growing reply is stored: at most this much shown text is lost when its host dies.
PARTIAL_STORE_SECONDS = 1.0
# How long an agent whose terminal closed may take to be reaped before its exit code is read.
EXIT_CODE_WAIT_SECONDS = 2.0
BASE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ")
# How long what a recovering host reads outlives the longest session: an ACP agent's session id (for
# session/load) and the mark that the first prompt was queued.
RECOVERY_KEYS_GRACE_SECONDS = 3600
# A live host waits out a Redis or PostgreSQL outage, retrying what it was storing at most this far
# apart, for as long as its agent runs; the session neither fails nor counts a Dramatiq retry.
OUTAGE_RETRY_MAX_SECONDS = 2.0
OUTAGES = default_outage_exceptions()
T = TypeVar("T")
# What an ACP agent reports besides messages, as events on the session's log.
NOTICE_EVENTS = {"tool_call": EventType.AGENT_TOOL_CALL, "plan": EventType.PLAN_UPDATED}


class SessionEnded(Exception):
    def __init__(self, reason: str, status: Literal["ended", "failed"] = "ended") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class HandedOver(Retry):
    """This worker is stopping: the session goes back to the queue for another host to take over."""

    def __init__(self) -> None:
        super().__init__("worker shutting down; handing the session over", delay=HANDOVER_DELAY_MS)


def private_dir(root: Path, path: Path) -> Path:
    """``path`` and every directory between ``root`` and it, created 0700 (mkdir's ``parents``
    would leave the levels in between 0755, listing every org's and user's ids)."""
    for level in [*reversed(path.relative_to(root).parents), path.relative_to(root)]:
        directory = root / level
        directory.mkdir(mode=0o700, exist_ok=True)
        directory.chmod(0o700)
    return path


def workspace_for(context: WorkerContext, event: Event) -> Path:
    root = context.settings.workspace_root.absolute()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return private_dir(root, context.settings.workspace_of(event.org_id, event.user_id, event.session_id))


def place_upload(target: Path, content: bytes, owner: int | None = None) -> None:
    """Write an uploaded file readable by the agent only (blocking: run it in a thread).

    The workspace is the agent's to change, so nothing in it is followed: the uploads directory and
    the partial file are opened with O_NOFOLLOW relative to the directory's descriptor (a symlink
    planted at ``uploads/.name.partial`` was written through), and the final rename replaces a
    link rather than its target."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        partial = f".{target.name}.partial"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial, dir_fd=directory)
        handle = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=directory
        )
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            if owner is not None:
                # The sandboxed agent runs as its session's uid.
                os.fchown(directory, owner, owner)
                os.fchown(out.fileno(), owner, owner)
        # A reader never sees half a file, and a redelivered upload simply replaces it.
        os.replace(partial, target.name, src_dir_fd=directory, dst_dir_fd=directory)
    finally:
        os.close(directory)


def directory_bytes(path: Path) -> int:
    """Bytes used by the files under ``path`` (blocking: run it in a thread)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def base_environment(home: Path) -> dict[str, str]:
    """Only what a terminal program needs: none of the service's own secrets reach the agent."""
    env = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env.update({"HOME": str(home), "TERM": "xterm-256color", "COLORTERM": "truecolor"})
    return env


def provider_environment(settings: Settings) -> dict[str, str]:
    """The model endpoint and key the agent CLI needs; set by the deployment, never by a request."""
    values = {
        "ANTHROPIC_BASE_URL": settings.anthropic_base_url,
        "ANTHROPIC_API_KEY": settings.anthropic_api_key,
        "OPENAI_BASE_URL": settings.openai_base_url,
        "OPENAI_API_KEY": settings.openai_api_key,
        "OPENAI_MODEL": settings.openai_model,
        "GOOGLE_GEMINI_BASE_URL": settings.gemini_base_url,
        "GEMINI_API_KEY": settings.gemini_api_key,
        "GEMINI_MODEL": settings.gemini_model,
        "FACTORY_API_KEY": settings.factory_api_key,
        "VERTEX_AI_API_KEY": settings.vertex_ai_api_key,
        "VERTEX_AI_PROJECT_ID": settings.vertex_ai_project_id,
        "VERTEX_AI_LOCATION": settings.vertex_ai_location,
    }
    # Each adapter passes on only the variables of its own CLI.
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in values.items()
        if value
    }


class SessionHost:
    def __init__(self, context: WorkerContext, event: Event) -> None:
        self.context = context
        self.event = event
        self.settings = context.settings
        self.names = context.names
        self.session_id = str(event.session_id)
        self.request = SessionRequest.of(event)
        self.agent_type = self.request.agent_type
        self.tenant = TenantContext(org_id=event.org_id, user_id=event.user_id, role="owner")
        # The input cursor (see the module's docstring): the last input that is done, the last one
        # handled, and the user message whose turn is open, with the id of its reply.
        self.last_input_id = "0-0"
        self._handled_id = "0-0"
        self._open_turn: tuple[str, int] | None = None
        self._turn_closed = asyncio.Event()
        self._turn_closed.set()
        # A recovered session's input whose turn its previous host had stored but not completed.
        self._reopen_id: str | None = None
        self._store_lock = asyncio.Lock()
        self._stored_cursor: tuple[str, str | None] = ("0-0", None)
        self.last_activity = time.monotonic()
        self.conversation: Conversation | AcpConversation | None = None
        # Set when the adapter is known: whether this host drives its agent over ACP.
        self.over_acp = False
        self.permissions: PermissionDesk | None = None
        # The ids of the tool calls an ACP agent reports running (pending or in progress).
        self._tools_running: set[str] = set()
        self._persisted: dict[int, str] = {}
        # Statuses whose row update is still to be written.
        self._to_record: asyncio.Queue[str] = asyncio.Queue()
        # A user message is being typed: the next `running` reported releases its claimed turn.
        self._turn_pending = False
        self._gateway_digest: str | None = None
        self._sidecars: list[SidecarProcess] = []
        self._sandboxes: list[Sandbox] = []
        # The sandboxed agent's uid (None unconfined), and the secrets its files may hold.
        self._agent_uid: int | None = None
        self._session_secrets: list[str] = []
        # Counted in the active-sessions gauge (by agent type) while the heartbeat keeps it fresh.
        self._active_member = f"{self.agent_type}:{self.session_id}"
        self.snapshots = workspace_store_for(
            self.settings,
            event.org_id,
            event.user_id,  # type: ignore[arg-type]
            event.session_id,  # type: ignore[arg-type]
            self.settings.workspace_of(event.org_id, event.user_id, event.session_id),
        )

    async def run(self) -> None:
        if self.context.draining.is_set():
            # A stopping worker's idle threads can still take a message; it belongs to another worker.
            raise HandedOver()
        log.info("hosting session %s (%s) on %s", self.session_id, self.agent_type, self.context.worker_id)
        row = await self._load_row()
        if row is None or row.status in ("ended", "failed"):
            log.info("session %s is over or gone; nothing to host", self.session_id)
            return
        # A session that had started before is a recovery: its previous host died.
        recovering = row.started_at is not None
        if recovering:
            log.info(
                "recovering session %s after input %s (open turn: %s)",
                self.session_id,
                row.last_input_id,
                row.pending_input_id,
            )
            self._reopen_id = row.pending_input_id
        self.last_input_id = self._handled_id = row.last_input_id or "0-0"
        self._stored_cursor = (self.last_input_id, row.pending_input_id)
        try:
            adapter = get_adapter(self.agent_type)
            self.over_acp = self.transport == "acp" and hasattr(adapter, "acp_command")
            self.conversation = await self._launch(adapter, recovering)
        except (AdapterUnavailable, ValueError, OSError) as exc:
            await self._stop_sidecars()
            await self._discard_private_files()
            await self._finish("failed", f"could not start the agent: {exc}")
            return
        except BaseException:
            await self._stop_sidecars()
            await self._discard_private_files()
            raise
        stopped: SessionEnded | HandedOver = SessionEnded("exited")
        try:
            # A task group, unlike gather, cancels the other loops when one of them ends the session.
            async with asyncio.TaskGroup() as loops:
                for loop in (
                    self._report(),
                    self._record(),
                    self._consume_input(),
                    self._store_partial(),
                    self._heartbeat(),
                    self._watch_limits(),
                    self.snapshots.run(),
                ):
                    loops.create_task(loop)
                if isinstance(self.conversation, Conversation):  # an ACP agent has no screen
                    screen_key = self.names.session_screen(self.session_id)
                    pty = self.conversation.pty
                    loops.create_task(
                        self._through_outage(
                            "the screen mirror", lambda: mirror_screen(self.context.redis, screen_key, pty)
                        )
                    )
        except* (SessionEnded, HandedOver) as group:
            stopped = group.exceptions[0]  # type: ignore[assignment]
        finally:
            # The router can go while the agent exits: each has its own grace period.
            await asyncio.gather(self.conversation.stop(), self._stop_sidecars())
            await self._discard_private_files()
            await self._persist_messages()
        if isinstance(stopped, HandedOver):
            await self._snapshot_for_handover()
            await self._release()
            log.info("handing session %s over: this worker is stopping", self.session_id)
            raise stopped
        await self._finish(stopped.status, stopped.reason)

    async def _load_row(self) -> UserSession | None:
        async with tenant_transaction(self.context.engine, self.tenant) as db:
            return await db.get(UserSession, self.event.session_id)

    async def _stored_messages(self) -> list[Message]:
        async with tenant_transaction(self.context.engine, self.tenant) as db:
            rows = await db.exec(
                select(SessionMessage)
                .where(SessionMessage.session_id == self.event.session_id)
                .order_by(col(SessionMessage.seq))
            )
            return [Message(r.seq, r.role, r.content, r.created_at) for r in rows]  # type: ignore[arg-type]

    async def _launch(self, adapter: AgentAdapter, recovering: bool) -> Conversation | AcpConversation:
        workspace = workspace_for(self.context, self.event)
        if recovering:
            # The previous host may have been another machine: bring its last snapshot here first.
            await self.snapshots.restore()
        home = workspace / ".home"
        home.mkdir(mode=0o700, exist_ok=True)
        private = private_dir(
            self.settings.workspace_root.absolute(), self.settings.private_of(self.session_id)
        )
        confined = required(self.settings)
        custom = self.request.custom_agent
        gateway_token = await self._issue_gateway_token()
        self._session_secrets.append(gateway_token)
        tenant_settings, tenant_secrets = (
            await self._tenant_configuration()
            if getattr(adapter, "uses_tenant_settings", False)
            else ({}, {})
        )
        ctx = LaunchContext(
            session_id=self.event.session_id,  # type: ignore[arg-type]
            org_id=self.event.org_id,
            user_id=self.event.user_id,  # type: ignore[arg-type]
            workspace=workspace,
            home=home,
            system_prompt=self.request.system_prompt,
            agent_env=provider_environment(self.settings),
            custom_command=tuple(self.settings.custom_agents.get(custom, ())) if custom else (),
            resume=recovering,
            mcp_gateway_url=self.settings.gateway_url(self.session_id),
            mcp_gateway_token=gateway_token,
            private=private,
            tenant_settings=tenant_settings,
            tenant_secrets=tenant_secrets,
        )
        adapter.prepare(ctx)
        agent_env = (
            getattr(adapter, "acp_environment", adapter.environment) if self.over_acp else adapter.environment
        )
        env = {**base_environment(home), **agent_env(ctx)}
        self._session_secrets += [env[key] for key in ("ANTHROPIC_API_KEY",) if key in env]
        limits = ResourceLimits(
            address_space_bytes=self.settings.agent_rlimit_as_bytes,
            cpu_seconds=self.settings.agent_rlimit_cpu_seconds,
            file_size_bytes=self.settings.agent_rlimit_fsize_bytes,
            processes=self.settings.agent_rlimit_nproc,
        )
        peers: list[tuple[Sandbox, int]] = []
        for spec in getattr(adapter, "sidecars", lambda _: [])(ctx):
            sidecar_home = spec.home or private
            sandbox = None
            if confined:
                endpoints = forwarded_endpoints(
                    list(spec.endpoints), self.settings, tenant_urls=spec.tenant_endpoints
                )
                sandbox = await self._sandbox(spec.name, sidecar_home, endpoints)
                peers.append((sandbox, spec.port))
            sidecar = SidecarProcess(spec, sandbox)
            self._sidecars.append(sidecar)
            await sidecar.start(sidecar_home, base_environment(home), limits)
        sandbox = None
        if confined:
            # Adapters also write the platform's endpoints into config files (codex's base_url).
            urls = [*env.values(), *ctx.agent_env.values(), self.settings.gateway_url(self.session_id)]
            local = {port for _, port in peers}
            sandbox = await self._sandbox(
                "agent", workspace, forwarded_endpoints(urls, self.settings, local), tuple(peers)
            )
            self._agent_uid = sandbox.uid
        conversation = await self._conversation(adapter, ctx, env, limits, sandbox)
        try:
            await self._start(conversation, workspace, recovering)
        except BaseException:
            # A redelivery starts the agent anew: this one must not live on beside it.
            await conversation.stop()
            raise
        return conversation

    async def _start(
        self, conversation: Conversation | AcpConversation, workspace: Path, recovering: bool
    ) -> None:
        await self._set_state("running")
        if recovering:
            await self._update_row(status="starting")
        else:
            await self._update_row(
                status="starting", started_at=datetime.now(UTC), workspace_path=str(workspace)
            )
        if recovering:
            # Before the agent draws anything: its start-up screen must not touch a stored message.
            conversation.restore(await self._stored_messages())
            self._persisted = {m.id: m.content for m in conversation.messages}
        # The heartbeat keeps the lease and the gateway token alive while the agent starts: an ACP
        # agent connects to its gateway inside session/new, which can take longer than their TTLs.
        beating = asyncio.create_task(self._heartbeat(), name=f"start-beat-{self.session_id}")
        try:
            await conversation.start()
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        if isinstance(conversation, AcpConversation) and conversation.agent_session_id:
            await self.context.redis.set(
                self.names.acp_session(self.session_id),
                conversation.agent_session_id,
                ex=self.settings.session_max_lifetime + RECOVERY_KEYS_GRACE_SECONDS,
            )
        if recovering:
            payload = {
                "worker": self.context.worker_id,
                "last_input_id": self.last_input_id,
                "retyped_input_id": self._reopen_id,
                **self._resumption(conversation),
            }
            await self.context.emit(self.event.follow_up(EventType.SESSION_RECOVERED, payload))
            await self._audit("session.recovered", "success", last_input_id=self.last_input_id)
        else:
            await self.context.emit(
                self.event.follow_up(EventType.SESSION_STARTED, {"worker": self.context.worker_id})
            )
            await self._audit("session.started", "success")
        # Also when recovering: a host that failed after marking the session started (a Redis
        # blip at its first emit) may not have queued the prompt, and its successor recovers.
        # Once any input was handled, the prompt was queued before it.
        if self.request.prompt and self._stored_cursor == ("0-0", None):
            # The first message waits for the agent to settle, like any other input; its turn is
            # claimed with it, so the first `stable` a client sees comes after the prompt's reply.
            await queue_prompt(
                self.context.redis,
                self.names,
                self.session_id,
                self.request.prompt,
                self.settings.session_max_lifetime + RECOVERY_KEYS_GRACE_SECONDS,
            )

    @staticmethod
    def _resumption(conversation: Conversation | AcpConversation) -> dict[str, object]:
        """How an ACP agent took up its conversation again: its own session loaded, or why not."""
        if not isinstance(conversation, AcpConversation):
            return {}
        if conversation.resume_note:
            return {"agent_session": "new", "agent_session_note": conversation.resume_note}
        return {"agent_session": "loaded"}

    @property
    def transport(self) -> str:
        return "acp" if self.over_acp else self.settings.transport_of(self.agent_type)

    async def _conversation(
        self,
        adapter: AgentAdapter,
        ctx: LaunchContext,
        env: dict[str, str],
        limits: ResourceLimits,
        sandbox: Sandbox | None,
    ) -> Conversation | AcpConversation:
        if not self.over_acp:
            pty = PtySession(adapter.command(ctx), cwd=ctx.workspace, env=env, limits=limits, sandbox=sandbox)
            timing = Timing(
                settle_seconds=self.settings.agent_settle_seconds,
                enter_timeout=self.settings.agent_enter_timeout_seconds,
            )
            return Conversation(pty, adapter, timing)
        gateway = []
        if ctx.mcp_gateway_url:
            # The session's gateway is the agent's only MCP server: tenant tokens never reach it.
            gateway.append(
                HttpMcpServer(
                    type="http",
                    name="agentapi",
                    url=ctx.mcp_gateway_url,
                    headers=[HttpHeader(name=k, value=v) for k, v in gateway_headers(ctx).items()],
                )
            )
        self.permissions = PermissionDesk(
            redis=self.context.redis,
            names=self.names,
            session_id=self.session_id,
            workspace=ctx.workspace,
            policy=await self._permission_policy(),
            timeout=self.settings.acp_permission_timeout_seconds,
            emit=self._emit,
            audit=self._audit,
        )
        return AcpConversation(
            adapter.acp_command(ctx),  # type: ignore[attr-defined]
            cwd=ctx.workspace,
            env=env,
            limits=limits,
            mcp_servers=gateway,
            ask_permission=self.permissions.ask,
            session_meta=adapter.acp_session_meta(ctx),  # type: ignore[attr-defined]
            resume_session_id=replies.optional_text(
                await self.context.redis.get(self.names.acp_session(self.session_id))
            )
            if ctx.resume
            else None,
            stderr_path=ctx.home / "acp-agent.log",
            sandbox=sandbox,
        )

    async def _permission_policy(self) -> PermissionPolicy:
        """The organization's policy for ACP permission requests (checked when it was saved)."""
        async with tenant_transaction(self.context.engine, self.tenant) as db:
            row = (
                await db.exec(select(TenantSettings).where(TenantSettings.org_id == self.event.org_id))
            ).first()
        raw = (row.settings if row else {}).get(PERMISSIONS_KEY) or {}
        try:
            return PermissionPolicy.model_validate(raw)
        except ValidationError:
            log.warning(
                "session %s: the org's %s are invalid; asking for everything",
                self.session_id,
                PERMISSIONS_KEY,
            )
            return PermissionPolicy(kinds=dict.fromkeys(DEFAULT_KINDS, "ask"))

    async def _tenant_configuration(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The organization's settings and opened secrets, for an adapter that builds its config from them."""
        async with tenant_transaction(self.context.engine, self.tenant) as db:
            row = (
                await db.exec(select(TenantSettings).where(TenantSettings.org_id == self.event.org_id))
            ).first()
        if row is None:
            return {}, {}
        try:
            secrets_ = open_tenant_secrets(self.settings.key_ring(), row)
        except (KeyRingError, DecryptionError) as exc:
            raise ValueError(f"the organization's secrets cannot be opened: {exc}") from exc
        return dict(row.settings), secrets_

    async def _sandbox(
        self,
        role: str,
        writable: Path,
        endpoints: tuple[Endpoint, ...],
        peers: tuple[tuple[Sandbox, int], ...] = (),
    ) -> Sandbox:
        """A sandbox for one of this session's processes, owning ``writable`` (its only writable path)."""
        uid = sandbox_uid(self.session_id, role)
        await asyncio.to_thread(give_to, writable, uid)
        runtime = self.settings.private_of(f"{self.session_id}.{role}.etc")
        sandbox = Sandbox(
            role, uid, runtime, writable=(writable,), endpoints=endpoints, peers=peers, settings=self.settings
        )
        self._sandboxes.append(sandbox)
        return sandbox

    async def _stop_sidecars(self) -> None:
        while self._sidecars:
            await self._sidecars.pop().stop()

    async def _discard_private_files(self) -> None:
        """Close the sandboxes' forwards and remove the session's private directory (router config,
        provider keys): nothing of it outlives the processes that needed it."""
        while self._sandboxes:
            await self._sandboxes.pop().close()
        await asyncio.to_thread(shutil.rmtree, self.settings.private_of(self.session_id), True)

    async def _issue_gateway_token(self) -> str:
        """A fresh MCP gateway token for this host's agent; Redis knows only its hash, and only
        while this host heartbeats. A recovered session's new host issues a new one."""
        token, digest = await gateway_tokens.issue(
            self.context.redis, self.names, self._gateway_holder(), STATE_TTL_SECONDS
        )
        self._gateway_digest = digest
        return token

    def _gateway_holder(self) -> TokenHolder:
        return TokenHolder(self.session_id, self.event.org_id, self.event.user_id)  # type: ignore[arg-type]

    async def _report(self) -> None:
        """Changes go to subscribers as they happen. The messages of a turn are stored before its
        end is announced, so a client that saw ``message.completed`` reads them from GET /messages;
        the row's status follows in ``_record``, so no other write holds back an event."""
        assert self.conversation is not None
        while True:
            change: Change = await self.conversation.changes.get()
            if change.notice is not None and change.notice.kind in ("agent_error", "agent_recovered"):
                await self._report_agent_error(change.notice.payload)
            elif change.notice is not None:
                await self._emit(NOTICE_EVENTS[change.notice.kind], change.notice.payload)
                if change.notice.kind == "tool_call":
                    await self._track_tool_call(change.notice.payload)
            if change.message is not None:
                await self._emit(EventType.MESSAGE_UPDATED, change.message.as_payload())
            if change.status is not None:
                if change.status == "stable":
                    # A turn that ended (or was cancelled) leaves no tool call running.
                    self._tools_running.clear()
                    self._close_turn(change.completed)
                    await self._persist_messages()
                    self.snapshots.turn_completed()
                    if self._open_turn is None:
                        self._turn_closed.set()
                await self._set_state(change.status)
                if change.status == "running" and self._turn_pending:
                    self._turn_pending = False
                    await self._through_outage(
                        "the turn", lambda: turn_taken(self.context.redis, self.names, self.session_id)
                    )
                await self._emit(EventType.SESSION_STATUS, self._status_payload(change.status))
                if change.completed is not None and change.completed.content:
                    await self._emit(EventType.MESSAGE_COMPLETED, change.completed.as_payload())
                self._to_record.put_nowait(change.status)

    @property
    def _detail(self) -> str:
        """What /status says beyond running/stable when the host knows better than the status."""
        if self.conversation is not None and self.conversation.agent_error:
            return "error"
        return "tool_use" if self._tools_running else ""

    async def _track_tool_call(self, call: dict[str, object]) -> None:
        """``detail: tool_use`` while an ACP agent reports a tool call pending or in progress."""
        before = self._detail
        status, call_id = call.get("status"), str(call.get("tool_call_id"))
        if status in ("pending", "in_progress"):
            self._tools_running.add(call_id)
        elif status in ("completed", "failed"):
            self._tools_running.discard(call_id)
        if self._detail != before:
            assert self.conversation is not None
            await set_detail(self.context.redis, self.names, self.session_id, self._detail)
            await self._emit(EventType.SESSION_STATUS, self._status_payload(self.conversation.status))

    def _status_payload(self, status: str) -> dict[str, object]:
        payload: dict[str, object] = {"status": status, "agent_type": self.agent_type}
        if self._detail:
            payload["detail"] = self._detail
        return payload

    async def _report_agent_error(self, error: dict[str, object]) -> None:
        """coder/agentapi's ``agent_error`` event when the screen shows a failure, and the status
        detail while it does (``error``), cleared when it no longer does."""
        assert self.conversation is not None
        if error:
            await self._emit(EventType.AGENT_ERROR, {**error, "time": rfc3339(datetime.now(UTC))})
        await set_detail(self.context.redis, self.names, self.session_id, self._detail)
        await self._emit(EventType.SESSION_STATUS, self._status_payload(self.conversation.status))

    async def _record(self) -> None:
        """The row's status. Statuses that queued up during a write are written as one: the row
        only needs the latest."""
        while True:
            status = await self._to_record.get()
            while not self._to_record.empty():
                status = self._to_record.get_nowait()
            await self._update_row(status=status)

    async def _consume_input(self) -> None:
        assert self.conversation is not None
        stream = self.names.session_input(self.session_id)
        entries = self.context.inputs.subscribe(stream, self.last_input_id)
        try:
            while True:
                entry_id, fields = await entries.get()
                if self.conversation.exited:
                    raise await self._exit_reason()
                try:
                    item = parse_input(fields)
                except ValidationError as exc:
                    # Nothing writes such an entry; it must not end the session, nor block what follows.
                    log.warning("session %s: skipped input %s: %s", self.session_id, entry_id, exc)
                else:
                    if isinstance(item, UserMessage):
                        # Keystrokes and uploads go on while a reply is written; a message waits for it.
                        await self._turn_closed.wait()
                    await self._handle_input(entry_id, item)
                self._handled_id = entry_id
                self.last_activity = time.monotonic()
                if self._open_turn is None:
                    self.last_input_id = entry_id
                    # One write for a run of inputs already read (keys sent a request each): a host
                    # that dies within it has its agent restarted and retypes at most that run, the
                    # same kind of repeat as the single input before the write, and no more than
                    # ``PARTIAL_STORE_SECONDS`` of it while inputs keep coming.
                    if entries.empty():
                        await self._persist_messages()
        finally:
            self.context.inputs.unsubscribe(stream)

    def _close_turn(self, completed: Message | None) -> None:
        """A settle that completes the open turn's reply moves the cursor past its message (and any
        keystrokes handled since); a settle left over from before the message was typed does not."""
        if self._open_turn is not None and completed is not None and completed.id >= self._open_turn[1]:
            self._open_turn = None
            self.last_input_id = self._handled_id

    async def _store_partial(self) -> None:
        """A growing reply is stored as it grows, so a host that dies loses at most this interval."""
        while True:
            await asyncio.sleep(PARTIAL_STORE_SECONDS)
            await self._persist_messages()

    async def _handle_input(self, entry_id: str, item: SessionInput) -> None:
        assert self.conversation is not None
        if isinstance(item, Stop):
            raise SessionEnded("stopped")
        if isinstance(item, RawKeys):
            self.conversation.send_raw(item.content.encode())
            return
        if isinstance(item, Interrupt):
            if isinstance(self.conversation, AcpConversation):
                await self.conversation.cancel()
            else:
                self.conversation.send_raw(interrupt_keys(self.conversation.adapter))
            return
        if isinstance(item, Upload):
            await self._place_upload(item)
            return
        if isinstance(item, PermissionChoice):
            if self.permissions is not None:
                self.permissions.answer(item.request_id, item.option_id, item.actor)
            return
        # The ingress only queues a user message while the agent is stable; the first prompt may
        # arrive while it starts, so wait for it to settle rather than lose the message.
        while True:
            await self.conversation.wait_stable(self.settings.session_max_lifetime)
            self._turn_pending = True
            try:
                user = self.conversation.open_turn(item.content, reopen=entry_id == self._reopen_id)
            except AgentBusy:
                continue
            except ValueError:
                self._turn_pending = False
                await turn_taken(self.context.redis, self.names, self.session_id)
                return
            break
        # Opened and recorded with no await between: whatever stores the user message stores the
        # cursor that says its turn is open.
        self._reopen_id = None
        self._open_turn = (entry_id, user.id + 1)
        self._turn_closed.clear()
        try:
            await self.conversation.type_turn(user.content)
        except AgentNotResponding as exc:
            # The agent lives but did not take the message: that turn fails, the session goes on and
            # the turn closes when the screen settles. Re-hosting would only type it again.
            log.warning("session %s: %s", self.session_id, exc)
            await self._emit(
                EventType.AGENT_ERROR,
                {
                    "level": "error",
                    "message": str(exc),
                    "kind": "not_responding",
                    "time": rfc3339(datetime.now(UTC)),
                },
            )
        await self._persist_messages()

    async def _place_upload(self, upload: Upload) -> None:
        """Put an uploaded file where the ingress said it would be, before any later input runs."""
        encoded = await self.context.redis.get(upload.key)
        if encoded is None:
            log.warning("upload %s for session %s expired before it was placed", upload.key, self.session_id)
            return
        workspace = self.settings.workspace_of(self.event.org_id, self.event.user_id, self.session_id)
        await asyncio.to_thread(
            place_upload, workspace / UPLOADS_DIR / upload.name, base64.b64decode(encoded), self._agent_uid
        )
        await self.context.redis.delete(upload.key)

    async def _heartbeat(self) -> None:
        while True:
            # One round trip: a worker beats for hundreds of sessions.
            await self._through_outage("the heartbeat", self._beat)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _beat(self) -> None:
        async with self.context.redis.pipeline(transaction=False) as beat:
            state = self.names.session_state(self.session_id)
            beat.hexists(state, "status")
            beat.hset(state, mapping={"host": self.context.worker_id, "heartbeat": str(time.time())})
            beat.expire(state, STATE_TTL_SECONDS)
            # Keep the idempotency lease while the session lives, so a duplicate never starts a
            # second host.
            beat.expire(self.names.claim(self.event.id), LEASE_SECONDS)
            beat.zadd(self.names.active_sessions(), {self._active_member: time.time() + STATE_TTL_SECONDS})
            digest = self._gateway_digest
            if digest:
                beat.expire(self.names.gateway_token(digest), STATE_TTL_SECONDS)
            had_status, *_, token_kept = await beat.execute()
        if digest and not token_kept:
            await gateway_tokens.restore(
                self.context.redis, self.names, self._gateway_holder(), digest, STATE_TTL_SECONDS
            )
        if not had_status and self.conversation is not None:
            # The hash was lost (Redis came back empty, or it expired during an outage): without a
            # status the ingress would refuse every message as busy. No turn can be claimed in it.
            await self._set_state(self.conversation.status)

    async def _watch_limits(self) -> None:
        assert self.conversation is not None
        started = measured = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if self.conversation.exited:
                raise await self._exit_reason()
            if isinstance(self.conversation, Conversation) and (failure := self.conversation.watch_failure()):
                log.error("session %s: reading the agent's screen failed", self.session_id, exc_info=failure)
                raise SessionEnded(
                    f"agent_error (screen): reading the agent's screen failed: {failure}", "failed"
                )
            if self.context.draining.is_set():
                raise HandedOver()
            error, since = self.conversation.agent_error, self.conversation.error_since
            if error and since is not None and now - since >= self.settings.agent_error_fail_seconds:
                raise SessionEnded(f"agent_error ({error.kind}): {error.message}", "failed")
            if now - started >= self.settings.session_max_lifetime:
                raise SessionEnded("max_lifetime")
            quota = self.settings.workspace_quota_bytes
            if quota is not None and now - measured >= DISK_CHECK_SECONDS:
                measured = now
                if await asyncio.to_thread(directory_bytes, self.conversation.workspace) > quota:
                    raise SessionEnded("disk_quota")
            if (
                self.conversation.status == "stable"
                and now - self.last_activity >= self.settings.session_timeout
            ):
                raise SessionEnded("idle_timeout")
            if self.conversation.status == "running":
                self.last_activity = now

    async def _exit_reason(self) -> SessionEnded:
        """An agent that exits by itself ends its session; one that exits with an error or a
        signal crashed, and its session fails saying so."""
        assert self.conversation is not None
        code = await self.conversation.exit_code(EXIT_CODE_WAIT_SECONDS)
        if not code:
            return SessionEnded("exited")
        how = f"signal {-code}" if code < 0 else f"code {code}"
        return SessionEnded(f"agent_error (crashed): the agent exited with {how}", "failed")

    async def _emit(self, type_: EventType, payload: dict[str, object]) -> None:
        event = self.event.follow_up(type_, payload)
        await self._through_outage(f"emitting {type_.value}", lambda: self.context.emit(event))

    async def _through_outage(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation``, retried with backoff while Redis or PostgreSQL is unreachable (each try
        takes a connection anew from its pool; a broken one is dropped, not reused), until the
        agent exits: an outage loses the session nothing it would not lose anyway."""

        def agent_gone(_: RetryCallState) -> bool:
            return self.conversation is not None and self.conversation.exited

        def waiting(state: RetryCallState) -> None:
            if state.attempt_number == 1 or state.attempt_number % 10 == 0:
                error = state.outcome.exception() if state.outcome else None
                log.warning("session %s: %s waits for the store: %s", self.session_id, what, error)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(OUTAGES),
            wait=wait_exponential_jitter(initial=0.1, max=OUTAGE_RETRY_MAX_SECONDS),
            stop=agent_gone,
            before_sleep=waiting,
            reraise=True,
        )

        async def attempt() -> T:
            # An async function: tenacity calls anything else as a plain function.
            return await operation()

        return await retrying(attempt)

    async def _audit(self, action: str, outcome: str, **details: object) -> None:
        """A session lifecycle step for the audit trail (losing it must not stop the session)."""
        event = audit_event(
            org_id=self.event.org_id,
            actor_user_id=self.event.user_id,
            action=action,
            outcome=outcome,
            resource_type="session",
            resource_id=self.session_id,
            details={"agent_type": self.agent_type, "worker": self.context.worker_id, **details},
            correlation_id=self.event.correlation_id,
            session_id=self.event.session_id,
        )
        try:
            await publish(self.context.redis, self.names, event)
        except (RedisError, OSError) as exc:
            log.error("audit event %s for session %s not published: %s", action, self.session_id, exc)

    async def _set_state(self, status: str) -> None:
        await self._through_outage(
            "the status",
            lambda: set_status(
                self.context.redis,
                self.names,
                self.session_id,
                status,
                self.agent_type,
                self.transport,
                STATE_TTL_SECONDS,
                self._detail,
            ),
        )

    async def _update_row(self, **values: object) -> None:
        await asyncio.shield(self._through_outage("the session row", lambda: self._write_row(values)))

    async def _write_row(self, values: dict[str, object]) -> None:
        async with tenant_transaction(self.context.engine, self.tenant) as db:
            await db.exec(
                update(UserSession)
                .where(
                    col(UserSession.id) == self.event.session_id, col(UserSession.org_id) == self.event.org_id
                )
                .values(updated_at=datetime.now(UTC), **values)
            )

    def _cursor(self) -> tuple[str, str | None]:
        return self.last_input_id, self._open_turn[0] if self._open_turn else None

    async def _persist_messages(self) -> None:
        """Upsert messages whose content changed since the last write (keyed by session and seq),
        and the input cursor, in one transaction: what is stored always agrees with the cursor.

        Writes are shielded from cancellation (``_update_row`` too): a hand-over cancels the host's
        loops, and a transaction cut short broke its pooled connection and held it, so that with
        the pool used up the hand-overs that followed waited for good (5 of 10 sessions)."""
        await asyncio.shield(self._through_outage("the messages", self._write_messages))

    async def _write_messages(self) -> None:
        if self.conversation is None:
            return
        async with self._store_lock:
            # Both taken together, before any await: a turn may close while this write is under way.
            cursor = self._cursor()
            changed = [
                replace(m)
                for m in self.conversation.messages
                if m.content and self._persisted.get(m.id) != m.content
            ]
            if not changed and cursor == self._stored_cursor:
                return
            async with tenant_transaction(self.context.engine, self.tenant) as db:
                for message in changed:
                    statement = dialect_insert(db, SessionMessage).values(
                        session_id=self.event.session_id,
                        org_id=self.event.org_id,
                        user_id=self.event.user_id,
                        seq=message.id,
                        role=message.role,
                        content=message.content,
                        created_at=message.time,
                        updated_at=datetime.now(UTC),
                    )
                    await db.exec(
                        statement.on_conflict_do_update(
                            index_elements=["session_id", "seq"],
                            set_={
                                "content": statement.excluded.content,
                                "updated_at": statement.excluded.updated_at,
                            },
                        )
                    )
                if cursor != self._stored_cursor:
                    await db.exec(
                        update(UserSession)
                        .where(
                            col(UserSession.id) == self.event.session_id,
                            col(UserSession.org_id) == self.event.org_id,
                        )
                        .values(last_input_id=cursor[0], pending_input_id=cursor[1])
                    )
            self._persisted.update({m.id: m.content for m in changed})
            self._stored_cursor = cursor

    async def _release(self) -> None:
        """Forget this host's hold on the session: its state, gauge entry and gateway token. Each
        is tried whatever became of the others: one failed delete must not leave the gateway token
        valid."""
        redis, names, gateway_digest = self.context.redis, self.names, self._gateway_digest
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            (
                "live state",
                lambda: redis.delete(
                    names.session_state(self.session_id), names.session_screen(self.session_id)
                ),
            ),
            ("active-sessions entry", lambda: redis.zrem(names.active_sessions(), self._active_member)),
        ]
        if gateway_digest:
            steps.append(("gateway token", lambda: gateway_tokens.revoke(redis, names, gateway_digest)))
        for what, step in steps:
            try:
                await step()
            except Exception:
                log.exception("session %s: its %s was not released", self.session_id, what)

    async def _snapshot_for_handover(self) -> None:
        """The agent has stopped: its files go to the store for the next host (a failure is logged;
        the next host then starts from the last debounced snapshot)."""
        try:
            await self.snapshots.snapshot()
        except Exception:
            log.exception("hand-over snapshot of session %s failed", self.session_id)

    async def _finish(self, status: str, reason: str) -> None:
        # One line per session's end: a session that ended unseen (a test waiting for its reply)
        # otherwise left no trace in the worker's log after "hosting session".
        log.info("session %s %s: %s", self.session_id, status, reason)
        await self._release()
        with contextlib.suppress(RedisError, OSError):
            await self.context.redis.delete(self.names.acp_session(self.session_id))
        try:
            await self.snapshots.erase()
        except Exception:
            log.exception("snapshots of ended session %s not erased", self.session_id)
        # The revoked gateway token and access key leave no copy behind in the agent's files.
        workspace = self.settings.workspace_of(self.event.org_id, self.event.user_id, self.session_id)
        await asyncio.to_thread(remove_files_holding, workspace / ".home", self._session_secrets)
        await self._update_row(status=status, end_reason=reason[:END_REASON_MAX], ended_at=datetime.now(UTC))
        kind = EventType.SESSION_ENDED if status == "ended" else EventType.SESSION_FAILED
        await self._emit(kind, {"reason": reason})
        await self._expire_keys()
        await self._audit(f"session.{status}", "success" if status == "ended" else "error", reason=reason)

    async def _expire_keys(self) -> None:
        """An ended session's input stream and event log go after a while (after its last event)."""
        ttl = self.settings.session_keys_ttl_seconds
        async with self.context.redis.pipeline(transaction=False) as keys:
            keys.expire(self.names.session_input(self.session_id), ttl)
            keys.expire(self.names.session_log(self.session_id), ttl)
            await keys.execute()
