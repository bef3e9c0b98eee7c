"""Agent sessions: create, list, read, stop, and the coder/agentapi-compatible per-session API."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import (
    ClientException,
    NotFoundException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import ServerSentEvent
from pydantic import BaseModel, Field, field_validator, model_validator
from redis.exceptions import RedisError
from sqlmodel import col, func, select

from api.auth import Principal
from api.correlation import current_correlation_id
from api.pagination import decode_cursor, encode_cursor
from api.problems import StrictBody, problem_responses
from api.recent import Recent
from api.routes.prompts import composed_prompt
from api.session_turns import DETAIL_BY_SESSION_STATUS, live_state, start_turn
from api.single_flight import SingleFlight
from api.sse import parse_last_event_id, session_event_stream, sse_response
from api.state import Resources, resources
from api.tenancy import tenant_context
from events.envelope import Event, EventType
from events.payloads import PermissionChoice, RawKeys, SessionRequest, Stop
from events.publisher import publish
from events.session_state import input_entry, queue_input
from schemas.db import MemberContext, TenantContext, tenant_transaction
from schemas.settings import is_transport
from schemas.tables import SessionMessage, TenantSettings, UserSession
from workers.agents import canonical_agent_type
from workers.agents.catalogue import SPECS, missing_settings
from workers.lifecycle import ACTIVE, end_lost_sessions, end_session, host_is_live

# Permission request ids are event ids (ULIDs).
REQUEST_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
MAX_MESSAGE_BYTES = 100_000


class CreateSession(StrictBody):
    agent_type: str = Field(
        min_length=1, max_length=32, description="claude, ccrouter (ccr), codex, ... or custom"
    )
    prompt: str | None = Field(None, max_length=MAX_MESSAGE_BYTES, description="first message for the agent")
    title: str | None = Field(None, max_length=200)
    custom_agent: str | None = Field(None, max_length=64, description="allowlisted command name, for custom")

    @field_validator("agent_type")
    @classmethod
    def _known_agent(cls, value: str) -> str:
        return canonical_agent_type(value)

    @model_validator(mode="after")
    def _custom_needs_a_command(self) -> CreateSession:
        if (self.agent_type == "custom") != (self.custom_agent is not None):
            raise ValueError("custom_agent is required for agent_type custom, and only for it")
        return self


class SendMessage(StrictBody):
    content: str = Field(max_length=MAX_MESSAGE_BYTES)
    type: Literal["user", "raw"] = "user"


class PermissionAnswer(StrictBody):
    option_id: str = Field(
        min_length=1, max_length=200, description="the chosen option: one of the request's options"
    )


class SessionOut(BaseModel):
    id: UUID
    org_id: UUID
    user_id: UUID
    agent_type: str
    status: str
    end_reason: str | None
    title: str | None
    created_at: datetime
    events_url: str


class SessionAccepted(SessionOut):
    event_id: str


class SessionPage(BaseModel):
    sessions: list[SessionOut]
    next_cursor: str | None


class MessageOut(BaseModel):
    id: int
    content: str
    role: str
    time: datetime


class MessagesOut(BaseModel):
    messages: list[MessageOut]


class StatusOut(BaseModel):
    status: Literal["running", "stable"] = Field(
        description="coder/agentapi's two values; an ended or failed session reads stable, so polling stops"
    )
    agent_type: str
    # How the agent is driven: coder/agentapi reports it as ``backend`` ("acp" | "pty"), and as
    # ``transport`` before it had ACP; both carry the same value.
    backend: Literal["acp", "pty"]
    transport: Literal["acp", "pty"]
    session_status: str = Field(
        description="the lifecycle: requested, starting, running, stable, ended, failed"
    )
    detail: str | None = Field(
        None, description="starting, thinking, waiting_for_input, tool_use or error, where it can be told"
    )
    end_reason: str | None = None


class Ok(BaseModel):
    ok: bool = True


def _out(row: UserSession) -> dict[str, object]:
    return {
        "id": row.id,
        "org_id": row.org_id,
        "user_id": row.user_id,
        "agent_type": row.agent_type,
        "status": row.status,
        "end_reason": row.end_reason,
        "title": row.title,
        "created_at": row.created_at,
        "events_url": f"/api/v1/sessions/{row.id}/events",
    }


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    created, ident = decode_cursor(cursor, 2)
    try:
        return datetime.fromisoformat(created), UUID(ident)
    except ValueError as exc:
        raise ValidationException("cursor is not one this API returned") from exc


def _scoped(query, ctx: TenantContext):
    """Tenant filter in the query itself (RLS enforces the same underneath)."""
    query = query.where(UserSession.org_id == ctx.org_id)
    if ctx.role == "member":
        query = query.where(UserSession.user_id == ctx.user_id)
    return query


class SessionController(Controller):
    path = "/api/v1/sessions"
    tags = ("sessions",)

    @post("/", status_code=202)
    async def create_session(
        self, data: CreateSession, request: Request[Principal, str, State], state: State
    ) -> SessionAccepted:
        """Request a new agent session; its progress arrives on `events_url`."""
        row, event = await start_session(resources(state), request.user, data)
        return SessionAccepted(**_out(row), event_id=event.id)

    @get("/")
    async def list_sessions(
        self,
        request: Request[Principal, str, State],
        state: State,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=200)] = None,
    ) -> SessionPage:
        """The caller's sessions (an admin's: the organization's), newest first."""
        res = resources(state)
        ctx = tenant_context(request.user)
        query = _scoped(select(UserSession), ctx)
        if cursor:
            created, ident = _decode_cursor(cursor)
            query = query.where(
                (col(UserSession.created_at) < created)
                | ((col(UserSession.created_at) == created) & (col(UserSession.id) < ident))
            )
        query = query.order_by(col(UserSession.created_at).desc(), col(UserSession.id).desc()).limit(
            limit + 1
        )
        async with tenant_transaction(res.engine, ctx) as db:
            rows = list(await db.exec(query))
        page = rows[:limit]
        next_cursor = (
            encode_cursor(page[-1].created_at.isoformat(), page[-1].id) if len(rows) > limit else None
        )
        return SessionPage(sessions=[SessionOut(**_out(r)) for r in page], next_cursor=next_cursor)

    @get("/{session_id:uuid}")
    async def get_session(
        self, session_id: UUID, request: Request[Principal, str, State], state: State
    ) -> SessionOut:
        row = await find_session(state, request.user, session_id)
        return SessionOut(**_out(row))

    @delete(
        "/{session_id:uuid}",
        status_code=202,
        responses={
            200: ResponseSpec(data_container=SessionOut, description="Ended at once, or already over")
        },
    )
    async def stop_session(
        self, session_id: UUID, request: Request[Principal, str, State], state: State
    ) -> Response[SessionOut]:
        """Stop the agent; the workspace is kept. 202 while its host stops it (the end arrives as
        `session_ended`); 200 with the ended session when no host holds it or it was already over."""
        row, hosted = await stop(resources(state), await find_session(state, request.user, session_id))
        return Response(SessionOut(**_out(row)), status_code=202 if hosted else 200)

    @get("/{session_id:uuid}/messages")
    async def messages(
        self, session_id: UUID, request: Request[Principal, str, State], state: State
    ) -> MessagesOut:
        """coder/agentapi's `GET /messages`: ids are list indexes, message 0 is the start-up screen."""
        res = resources(state)
        await find_session(state, request.user, session_id)
        async with tenant_transaction(res.engine, tenant_context(request.user)) as db:
            rows = await db.exec(
                select(SessionMessage)
                .where(SessionMessage.session_id == session_id)
                .order_by(col(SessionMessage.seq))
            )
            return MessagesOut(
                messages=[
                    MessageOut(id=r.seq, content=r.content, role=r.role, time=r.created_at) for r in rows
                ]
            )

    @get("/{session_id:uuid}/status")
    async def status(
        self, session_id: UUID, request: Request[Principal, str, State], state: State
    ) -> StatusOut:
        """coder/agentapi's `GET /status`: a live agent reads `running` unless it has settled; an
        ended or failed one reads `stable` (there is nothing left to wait for) with its reason."""
        res = resources(state)
        row = await find_session(state, request.user, session_id)
        if row.status not in ACTIVE:
            backend = res.settings.transport_of(row.agent_type)
            return StatusOut(
                status="stable",
                agent_type=row.agent_type,
                backend=backend,
                transport=backend,
                session_status=row.status,
                detail=DETAIL_BY_SESSION_STATUS.get(row.status),
                end_reason=row.end_reason,
            )
        live = await live_state(res.redis, res.names, session_id)
        agent_status = "stable" if live.get("status") == "stable" else "running"
        # The host says which it chose; before it has, the configured one.
        chosen = live.get("transport")
        backend = chosen if is_transport(chosen) else res.settings.transport_of(row.agent_type)
        detail = live.get("detail") or DETAIL_BY_SESSION_STATUS.get(live.get("status") or row.status)
        return StatusOut(
            status=agent_status,
            agent_type=row.agent_type,
            backend=backend,
            transport=backend,
            session_status=row.status,
            detail=detail,
        )

    @post("/{session_id:uuid}/message", status_code=200, responses=problem_responses(410))
    async def send_message(
        self, session_id: UUID, data: SendMessage, request: Request[Principal, str, State], state: State
    ) -> Ok:
        """coder/agentapi's `POST /message`: `user` messages only while the agent is stable (else 409);
        `raw` keystrokes go straight to the terminal and are not recorded."""
        row = await find_messageable_session(state, request.user, session_id)
        await deliver_message(resources(state), row, data)
        return Ok()

    @post("/{session_id:uuid}/permissions/{request_id:str}", status_code=202)
    async def answer_permission(
        self,
        session_id: UUID,
        request_id: str,
        data: PermissionAnswer,
        request: Request[Principal, str, State],
        state: State,
    ) -> Ok:
        """Answer an ACP agent's `permission_request` event with one of its options; the agent
        goes on with it. 404 once a request is answered, expired or withdrawn."""
        res = resources(state)
        row = await find_session(state, request.user, session_id)
        await answer_permission(res, row, request_id, data.option_id, request.user.user_id)
        return Ok()

    @get("/{session_id:uuid}/events", timeout=None, media_type="text/event-stream")
    async def session_events(
        self,
        session_id: UUID,
        request: Request[Principal, str, State],
        state: State,
        last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID", required=False)] = None,
    ) -> ServerSentEvent:
        """SSE: replays the session's event log after Last-Event-ID, then relays live events."""
        res = resources(state)
        await find_session(state, request.user, session_id)
        after = parse_last_event_id(last_event_id)
        if last_event_id and after is None:
            raise ValidationException("Last-Event-ID must be an event-log id such as 1732460000000-0")
        return await sse_response(
            res.redis,
            session_event_stream(
                res.redis, res.names, res.hub, str(session_id), after, res.settings.sse_heartbeat_seconds
            ),
            res.draining,
        )


async def start_session(
    res: Resources, principal: Principal, data: CreateSession
) -> tuple[UserSession, Event]:
    """Create the session row, then publish its request (after the commit)."""
    if data.custom_agent is not None and data.custom_agent not in res.settings.custom_agents:
        raise ValidationException(
            "custom_agent is not on this platform's allowlist",
            extra=[{"key": "custom_agent", "message": "not an allowlisted command name"}],
        )
    ctx = tenant_context(principal)
    await _refuse_unconfigured(res, ctx, data.agent_type)
    await _check_quota(res, ctx)
    assert ctx.org_id is not None and ctx.user_id is not None
    system_prompt = await composed_prompt(res, ctx.org_id, ctx.user_id, data.agent_type)
    async with tenant_transaction(res.engine, ctx) as db:
        row = UserSession(
            org_id=ctx.org_id,
            user_id=ctx.user_id,
            agent_type=data.agent_type,
            status="requested",
            title=data.title,
        )
        db.add(row)
        await db.flush()
    # Published after the commit, so a worker never sees a session row that does not exist yet.
    event = Event(
        type=EventType.SESSION_REQUESTED,
        org_id=row.org_id,
        user_id=row.user_id,
        session_id=row.id,
        correlation_id=current_correlation_id(),
        payload=SessionRequest(
            agent_type=row.agent_type,
            prompt=data.prompt,
            custom_agent=data.custom_agent,
            system_prompt=system_prompt,
        ).payload(),
    )
    try:
        await publish(res.redis, res.names, event)
    except (RedisError, OSError):
        # Nobody will ever host it: end the row now, or it would count against the caller's
        # session quota forever. The caller gets a 503 and tries again.
        async with tenant_transaction(res.engine, ctx) as db:
            stored = await db.get(UserSession, row.id)
            if stored is not None:
                stored.status, stored.end_reason = "failed", "not_started:event_bus_unavailable"
                stored.ended_at = datetime.now(UTC)
                db.add(stored)
        raise
    return row, event


async def _refuse_unconfigured(res: Resources, ctx: TenantContext, agent_type: str) -> None:
    """422 naming the settings an agent type lacks here: its session would only fail (a Claude Code
    without a key answers "Not logged in" after a dozen seconds of `running`)."""
    tenant: dict[str, Any] = {}
    if SPECS[agent_type].tenant_section:
        async with tenant_transaction(res.engine, ctx) as db:
            query = select(TenantSettings).where(TenantSettings.org_id == ctx.org_id)
            row = (await db.exec(query)).first()
        tenant = row.settings if row else {}
    missing = missing_settings(res.settings, agent_type, tenant)
    if missing:
        needs = " or ".join(missing) if SPECS[agent_type].needs_one_of else ", ".join(missing)
        raise ValidationException(
            f"agent type {agent_type} is not configured",
            extra=[{"key": "agent_type", "message": f"cannot run here until {needs} is set"}],
        )


def refuse_if_over(row: UserSession) -> None:
    """410 for a session that ended or failed: no message will ever reach its agent."""
    if row.status not in ACTIVE:
        reason = f": {row.end_reason}" if row.end_reason else ""
        raise ClientException(
            f"the session has {row.status}{reason}",
            status_code=410,
            extra={"session_status": row.status, "end_reason": row.end_reason},
        )


async def deliver_message(res: Resources, row: UserSession, data: SendMessage) -> None:
    """Queue a message for the session's host, refusing what the agent cannot take now."""
    refuse_if_over(row)
    content = data.content.strip() if data.type == "user" else data.content
    if not content:
        raise ValidationException(
            "content is empty", extra=[{"key": "content", "message": "must not be empty"}]
        )
    if data.type == "user":
        if not await start_turn(res.redis, res.names, row.id, content):
            raise ClientException("the agent is busy; send when its status is stable", status_code=409)
        return
    stream, fields = input_entry(res.names, row.id, RawKeys(content=content))
    await res.batch.execute(lambda pipe: pipe.xadd(stream, fields))


async def answer_permission(
    res: Resources, row: UserSession, request_id: str, option_id: str, actor: object
) -> None:
    """Take the open request once (the first answer wins) and hand the answer to the session's host."""
    if row.status not in ACTIVE:
        raise ClientException(f"the session has {row.status}", status_code=409)
    key = res.names.permission_request(row.id, request_id)
    opened = await res.redis.get(key) if REQUEST_ID.fullmatch(request_id) else None
    if opened is None:
        raise NotFoundException("no open permission request with this id (answered, expired or never asked)")
    options = json.loads(opened)["options"]
    if option_id not in options:
        raise ValidationException(
            "option_id is not one of the request's options",
            extra=[{"key": "option_id", "message": f"expected one of: {', '.join(options)}"}],
        )
    if not await res.redis.delete(key):
        raise NotFoundException("no open permission request with this id (answered, expired or never asked)")
    await queue_input(
        res.redis,
        res.names,
        row.id,
        PermissionChoice(request_id=request_id, option_id=option_id, actor=str(actor)),
    )


async def stop(res: Resources, row: UserSession) -> tuple[UserSession, bool]:
    """Stop a session whatever state its host is in: a live host is asked to stop it (and says so
    on the event log); with no host, the row is ended here. Whether a host is stopping it."""
    _active_rows.forget(row.id)
    if row.status not in ACTIVE:
        return row, False
    # Asked in any case: a host that is starting right now finds the request when it reads its input.
    await queue_input(res.redis, res.names, row.id, Stop())
    if await host_is_live(res.redis, res.names, row.id):
        return row, True
    ended = await end_session(
        res.engine,
        res.redis,
        res.names,
        row,
        "stopped",
        maxlen=res.settings.event_log_maxlen,
        correlation_id=current_correlation_id(),
    )
    if ended is None:  # its host ended it meanwhile
        ended = await _reload(res, row)
    return ended, False


async def _reload(res: Resources, row: UserSession) -> UserSession:
    owner = TenantContext(org_id=row.org_id, user_id=row.user_id, role="owner")
    async with tenant_transaction(res.engine, owner) as db:
        return await db.get(UserSession, row.id) or row


async def _check_quota(res: Resources, ctx: MemberContext) -> None:
    """Per-user and per-org limits on active sessions (a soft limit: two racing creates may both pass).

    Members see only their own rows under RLS, so the org-wide count reads as an org admin would;
    it returns counts only, never another member's rows.
    """
    counting = TenantContext(org_id=ctx.org_id, user_id=ctx.user_id, role="admin")
    async with tenant_transaction(res.engine, counting) as db:
        active = await db.exec(
            select(UserSession.user_id, func.count())
            .where(UserSession.org_id == ctx.org_id, col(UserSession.status).in_(ACTIVE))
            .group_by(col(UserSession.user_id))
        )
        counts = dict(active.all())
    if counts.get(ctx.user_id, 0) >= res.settings.max_sessions_per_user or (
        sum(counts.values()) >= res.settings.max_sessions_per_org
    ):
        # Sessions whose host is gone hold no agent: end them before refusing the caller.
        if await end_lost_sessions(res.engine, res.redis, res.names, res.settings, ctx.org_id):
            await _check_quota(res, ctx)
            return
    if counts.get(ctx.user_id, 0) >= res.settings.max_sessions_per_user:
        raise TooManyRequestsException(
            f"you already have {res.settings.max_sessions_per_user} active sessions; stop one first",
            headers={"Retry-After": "30"},
        )
    if sum(counts.values()) >= res.settings.max_sessions_per_org:
        raise TooManyRequestsException(
            f"the organization already has {res.settings.max_sessions_per_org} active sessions",
            headers={"Retry-After": "30"},
        )


# A storm of identical lookups (thousands of SSE clients joining one session) shares one query.
_session_lookups: SingleFlight[tuple[TenantContext, UUID], UserSession | None] = SingleFlight()


# Active sessions' rows as the message path last read them, per caller. Under load one session's
# messages read the same row from PostgreSQL (a tenant transaction and the pool's ping) hundreds
# of times a second: 11 % of a message's CPU. Kept for a second, an end elsewhere (its host, the
# reconciler, another ingress process) is seen up to a second late: a message accepted in that
# second goes where one sent just before the end goes. This process's own stops forget at once.
ACTIVE_ROW_SECONDS = 1.0
_active_rows: Recent[UUID, tuple[TenantContext, UserSession]] = Recent(ACTIVE_ROW_SECONDS)


async def find_messageable_session(state: State, principal: Principal, session_id: UUID) -> UserSession:
    """``find_session`` for the message path, from the second-old row of an active session."""
    ctx = tenant_context(principal)
    cached = _active_rows.get(session_id, None)
    if cached is not None and cached[0] == ctx:
        return cached[1]
    row = await find_session(state, principal, session_id)
    if row.status in ACTIVE:
        _active_rows.put(session_id, (ctx, row))
    return row


async def find_session(state: State, principal: Principal, session_id: UUID) -> UserSession:
    """The caller's tenant's session, or 404: another org's id is indistinguishable from none."""
    res = resources(state)
    ctx = tenant_context(principal)

    async def lookup() -> UserSession | None:
        async with tenant_transaction(res.engine, ctx) as db:
            return (
                await db.exec(_scoped(select(UserSession), ctx).where(UserSession.id == session_id))
            ).first()

    row = await _session_lookups.run((ctx, session_id), lookup)
    if row is None:
        raise NotFoundException("session not found")
    return row
