"""Everything written to a session's input stream, which its host reads in order: user messages,
raw keys, interrupts, permission answers, uploads and stop requests."""

from __future__ import annotations

import base64
import json
import re
import secrets
import unicodedata
from pathlib import PurePosixPath
from typing import Literal
from uuid import UUID

from redis.asyncio.client import Pipeline

from events.batch import Queue
from events.payloads import Interrupt, PermissionChoice, RawKeys, Stop, Upload, UserMessage
from events.session_state import input_entry, queue_input, start_turn
from schemas.db import MemberContext, TenantContext, tenant_transaction
from schemas.settings import UPLOADS_DIR
from schemas.tables import UserSession
from services.context import Backends, IngressBackends
from services.errors import Conflict, Forbidden, Gone, Invalid, NotFound, TooLarge
from services.sessions.lifecycle import ACTIVE
from services.sessions.lookup import find_session

# Permission request ids are event ids (ULIDs).
REQUEST_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
NO_OPEN_REQUEST = "no open permission request with this id (answered, expired or never asked)"
# coder/agentapi's limit on an uploaded file.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Parked files expire if no host ever places them (the session died and was never recovered).
PARKED_SECONDS = 3600
# Spaces too: agents pass paths to shells, and a path that needs quoting is one they get wrong.
UNSAFE = re.compile(r"[^\w.\-]")
# File systems allow 255 bytes a name; the host writes ``.<name>.partial`` first.
MAX_NAME_BYTES = 200


def refuse_if_over(row: UserSession) -> None:
    """Gone for a session that ended or failed: no message will ever reach its agent."""
    if row.status not in ACTIVE:
        reason = f": {row.end_reason}" if row.end_reason else ""
        raise Gone(
            f"the session has {row.status}{reason}", session_status=row.status, end_reason=row.end_reason
        )


async def deliver_message(
    backends: IngressBackends,
    row: UserSession,
    content: str,
    kind: Literal["user", "raw"],
    along: Queue | None = None,
) -> bool:
    """Queue a message for the session's host, refusing what the agent cannot take now: a user
    message only while the agent is stable; raw keystrokes go straight to the terminal. A raw
    message's entry goes in one pipeline with the commands ``along`` queues (the request's audit
    record); a user message's does not. Whether Redis carried out what ``along`` queued (True when
    nothing was): the message is queued even where it refused those, and the caller keeps what they
    were for another way."""
    refuse_if_over(row)
    if kind == "user":
        content = content.strip()
    if not content:
        raise Invalid.field("content", "must not be empty", "content is empty")
    if kind == "user":
        if not await start_turn(backends.redis, backends.names, row.id, content):
            raise Conflict("the agent is busy; send when its status is stable")
        return True
    stream, fields = input_entry(backends.names, row.id, RawKeys(content=content))

    def queue(pipe: Pipeline) -> None:
        pipe.xadd(stream, fields)
        if along is not None:
            along(pipe)

    entry, *alongside = await backends.batch.execute(queue, raise_on_error=False)
    if isinstance(entry, Exception):
        raise entry
    return not any(isinstance(reply, Exception) for reply in alongside)


async def chat_message(
    backends: IngressBackends,
    actor: MemberContext,
    session_id: UUID,
    content: str,
    kind: Literal["user", "raw"],
) -> UserSession:
    """A chat message to one of the actor's own sessions: an admin sees the organization's
    sessions but chats only in their own."""
    row = await find_session(backends, actor, session_id)
    if row.user_id != actor.user_id:
        raise Forbidden("only the session's owner chats in it")
    await deliver_message(backends, row, content, kind)
    return row


async def queue_webhook_message(backends: Backends, org_id: UUID, session_id: UUID, content: str) -> bool:
    """A webhook's message for one of its organization's active sessions; False when there is
    none. The host delivers input only once the agent is stable, so a busy agent gets it next."""
    scope = TenantContext(org_id=org_id, user_id=None, role="admin")
    async with tenant_transaction(backends.engine, scope) as db:
        row = await db.get(UserSession, session_id)
    if row is None or row.org_id != org_id or row.status not in ACTIVE:
        return False
    await queue_input(backends.redis, backends.names, session_id, UserMessage(content=content))
    return True


async def answer_permission(
    backends: Backends, row: UserSession, request_id: str, option_id: str, actor_user_id: UUID
) -> None:
    """Take the open request once (the first answer wins) and hand the answer to the session's host."""
    if row.status not in ACTIVE:
        raise Conflict(f"the session has {row.status}")
    redis, names = backends.redis, backends.names
    key = names.permission_request(row.id, request_id)
    opened = await redis.get(key) if REQUEST_ID.fullmatch(request_id) else None
    if opened is None:
        raise NotFound(NO_OPEN_REQUEST)
    options = json.loads(opened)["options"]
    if option_id not in options:
        raise Invalid.field(
            "option_id",
            f"expected one of: {', '.join(options)}",
            "option_id is not one of the request's options",
        )
    if not await redis.delete(key):
        raise NotFound(NO_OPEN_REQUEST)
    choice = PermissionChoice(request_id=request_id, option_id=option_id, actor=str(actor_user_id))
    await queue_input(redis, names, row.id, choice)


async def request_interrupt(backends: Backends, row: UserSession) -> None:
    """The agent's own interrupt keys, sent by its host."""
    refuse_if_over(row)
    await queue_input(backends.redis, backends.names, row.id, Interrupt())


async def request_stop(backends: Backends, session_id: UUID) -> None:
    """Ask the session's host to stop it; a host that is starting finds the request when it reads
    its input."""
    await queue_input(backends.redis, backends.names, session_id, Stop())


def safe_name(filename: str | None) -> str:
    """The file's own name, with no directory and nothing a shell or a terminal would trip on."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = UNSAFE.sub("_", unicodedata.normalize("NFC", name.strip()))
    if not name.strip("."):
        raise Invalid.field("file", "filename is missing or empty", "the file needs a name")
    return _within_bytes(name, MAX_NAME_BYTES)


def _within_bytes(name: str, limit: int) -> str:
    """``name`` cut to ``limit`` UTF-8 bytes, keeping a short extension: 200 times "é" (400 bytes) was
    accepted and the host's ``.<name>.partial`` then exceeded the file system's 255-byte names."""
    if len(name.encode()) <= limit:
        return name
    suffix = PurePosixPath(name).suffix
    suffix = suffix if len(suffix.encode()) <= 16 else ""
    stem = name[: len(name) - len(suffix)].encode()[: limit - len(suffix.encode())]
    return stem.decode(errors="ignore") + suffix


async def upload(backends: Backends, row: UserSession, filename: str | None, content: bytes) -> str:
    """Park the file in Redis and queue an ``upload`` input: the host writes it before any later
    input, so a message that names the answered path always finds the file. The path as the agent
    sees it."""
    if row.status not in ACTIVE:
        raise Conflict(f"the session has {row.status}")
    name = safe_name(filename)
    if len(content) > MAX_UPLOAD_BYTES:
        raise TooLarge(f"files are limited to {MAX_UPLOAD_BYTES} bytes", limit_bytes=MAX_UPLOAD_BYTES)
    key = backends.names.session_upload(row.id, secrets.token_hex(8))
    await backends.redis.set(key, base64.b64encode(content).decode(), ex=PARKED_SECONDS)
    await queue_input(backends.redis, backends.names, row.id, Upload(key=key, name=name))
    return str(backends.settings.workspace_of(row.org_id, row.user_id, row.id) / UPLOADS_DIR / name)
