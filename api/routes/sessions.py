"""Agent sessions: create, list, read, stop, and the coder/agentapi-compatible per-session API
(``services.sessions`` does the work), also at the root for a session client key (api.session_alias)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import ServerSentEvent
from litestar.types import HTTPScope
from pydantic import BaseModel, Field

from api.audit_trail import along, not_along
from api.auth import Principal
from api.lean_message import lean_message
from api.pagination import decode_cursor, encode_cursor
from api.problems import StrictBody, problem_responses
from api.session_alias import ALIAS_OPT, ALIAS_RESPONSES, ALIAS_SECURITY, ALIAS_TAGS, keyed_session
from api.session_bodies import MAX_MESSAGE_BYTES, CreateSession
from api.sse import parse_last_event_id, session_event_stream, sse_response
from api.state import Resources, resources
from api.tenancy import tenant_context
from schemas.db import MemberContext
from schemas.tables import UserSession
from services.sessions.ending import stop_session
from services.sessions.input import answer_permission, deliver_message
from services.sessions.live import session_status
from services.sessions.lookup import find_messageable_session, find_session, list_sessions, session_messages
from services.sessions.start import start_session


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


# The answer to every accepted message, encoded once: an Ok model built and encoded per message
# was ~3 % of the ingress's CPU for it.
OK_BODY = Ok().model_dump_json().encode()


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


async def _send(res: Resources, row: UserSession, data: SendMessage, scope: HTTPScope) -> Response[Ok]:
    await _deliver(res, row, data, scope)
    # Bytes go out as they are; Response[Ok] keeps the documented body Ok's.
    return Response(OK_BODY)  # type: ignore[arg-type]


async def _deliver(res: Resources, row: UserSession, data: SendMessage, scope: HTTPScope) -> None:
    # A raw message's audit record goes to Redis with it: one round trip instead of two.
    if not await deliver_message(res, row, data.content, data.type, along(scope)):
        # The message is queued: Redis refused only its record, which the edge now keeps.
        not_along(scope)


async def _message_session(res: Resources, principal: Principal, session_id: UUID) -> UserSession:
    return await find_messageable_session(res, tenant_context(principal), session_id)


async def _lean_send(scope: HTTPScope, data: SendMessage) -> bytes:
    """``send_message`` for api.lean_message: the same calls, from the scope."""
    res = resources(scope["app"].state)
    session_id: UUID = scope["path_params"]["session_id"]  # type: ignore[assignment]  # parsed by the router (:uuid)
    row = await _message_session(res, scope["user"], session_id)
    await _deliver(res, row, data, scope)
    return OK_BODY


async def _lean_alias_send(scope: HTTPScope, data: SendMessage) -> bytes:
    """``alias_send_message`` for api.lean_message: the same calls, from the scope."""
    res = resources(scope["app"].state)
    await _deliver(res, await keyed_session(res, scope["user"]), data, scope)
    return OK_BODY


class SessionController(Controller):
    path = "/api/v1/sessions"
    tags = ("sessions",)

    @post("/", status_code=202)
    async def create_session(
        self, data: CreateSession, request: Request[Principal, str, State], state: State
    ) -> SessionAccepted:
        """Request a new agent session; its progress arrives on `events_url`."""
        row, event = await start_session(resources(state), tenant_context(request.user), data.new_session())
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
        actor = tenant_context(request.user)
        rows = await list_sessions(resources(state), actor, limit, _decode_cursor(cursor) if cursor else None)
        page = rows[:limit]
        next_cursor = (
            encode_cursor(page[-1].created_at.isoformat(), page[-1].id) if len(rows) > limit else None
        )
        return SessionPage(sessions=[SessionOut(**_out(r)) for r in page], next_cursor=next_cursor)

    @get("/{session_id:uuid}")
    async def get_session(
        self, session_id: UUID, request: Request[Principal, str, State], state: State
    ) -> SessionOut:
        row = await find_session(resources(state), tenant_context(request.user), session_id)
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
        res = resources(state)
        row, hosted = await stop_session(
            res, await find_session(res, tenant_context(request.user), session_id)
        )
        return Response(SessionOut(**_out(row)), status_code=202 if hosted else 200)

    @get("/{session_id:uuid}/messages")
    async def messages(
        self, session_id: UUID, request: Request[Principal, str, State], state: State
    ) -> MessagesOut:
        """coder/agentapi's `GET /messages`: ids are list indexes, message 0 is the start-up screen."""
        res, actor = resources(state), tenant_context(request.user)
        return await _messages(res, actor, await find_session(res, actor, session_id))

    @get("/{session_id:uuid}/status")
    async def status(
        self, session_id: UUID, request: Request[Principal, str, State], state: State
    ) -> StatusOut:
        """coder/agentapi's `GET /status`: a live agent reads `running` unless it has settled; an
        ended or failed one reads `stable` (there is nothing left to wait for) with its reason."""
        res = resources(state)
        return await _status(res, await find_session(res, tenant_context(request.user), session_id))

    @post(
        "/{session_id:uuid}/message",
        status_code=200,
        responses=problem_responses(410),
        middleware=[lean_message("/api/v1/sessions/{session_id}/message", SendMessage, _lean_send)],
    )
    async def send_message(
        self, session_id: UUID, data: SendMessage, request: Request[Principal, str, State], state: State
    ) -> Response[Ok]:
        """coder/agentapi's `POST /message`: `user` messages only while the agent is stable (else 409);
        `raw` keystrokes go straight to the terminal and are not recorded."""
        res = resources(state)
        return await _send(res, await _message_session(res, request.user, session_id), data, request.scope)

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
        row = await find_session(res, tenant_context(request.user), session_id)
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
        await find_session(res, tenant_context(request.user), session_id)
        return await _events(res, session_id, last_event_id)


async def _messages(res: Resources, actor: MemberContext, row: UserSession) -> MessagesOut:
    rows = await session_messages(res, actor, row)
    return MessagesOut(
        messages=[MessageOut(id=r.seq, content=r.content, role=r.role, time=r.created_at) for r in rows]
    )


async def _status(res: Resources, row: UserSession) -> StatusOut:
    now = await session_status(res, row)
    return StatusOut(
        status=now.agent_status,
        agent_type=row.agent_type,
        backend=now.backend,
        transport=now.backend,
        session_status=now.session_status,
        detail=now.detail,
        end_reason=now.end_reason,
    )


async def _events(res: Resources, session_id: UUID, last_event_id: str | None) -> ServerSentEvent:
    after = parse_last_event_id(last_event_id)
    if last_event_id and after is None:
        raise ValidationException("Last-Event-ID must be an event-log id such as 1732460000000-0")
    return await sse_response(
        res.redis,
        session_event_stream(
            res.redis, res.names, res.hub, str(session_id), after, res.settings.sse_heartbeat_seconds
        ),
        res.streams,
    )


# The root-path alias (api.session_alias): the same calls for the session a client key names.


@get("/status", opt=ALIAS_OPT, security=ALIAS_SECURITY, tags=ALIAS_TAGS, responses=ALIAS_RESPONSES)
async def alias_status(request: Request[Principal, str, State], state: State) -> StatusOut:
    """`GET /api/v1/sessions/{id}/status` for the client key's session."""
    res = resources(state)
    return await _status(res, await keyed_session(res, request.user))


@get("/messages", opt=ALIAS_OPT, security=ALIAS_SECURITY, tags=ALIAS_TAGS, responses=ALIAS_RESPONSES)
async def alias_messages(request: Request[Principal, str, State], state: State) -> MessagesOut:
    """`GET /api/v1/sessions/{id}/messages` for the client key's session."""
    res = resources(state)
    return await _messages(res, tenant_context(request.user), await keyed_session(res, request.user))


@post(
    "/message",
    status_code=200,
    opt=ALIAS_OPT,
    security=ALIAS_SECURITY,
    tags=ALIAS_TAGS,
    responses=ALIAS_RESPONSES,
    middleware=[lean_message("/message", SendMessage, _lean_alias_send)],
)
async def alias_send_message(
    data: SendMessage, request: Request[Principal, str, State], state: State
) -> Response[Ok]:
    """`POST /api/v1/sessions/{id}/message` for the client key's session."""
    res = resources(state)
    return await _send(res, await keyed_session(res, request.user), data, request.scope)


@get(
    "/events",
    timeout=None,
    media_type="text/event-stream",
    opt=ALIAS_OPT,
    security=ALIAS_SECURITY,
    tags=ALIAS_TAGS,
    responses=ALIAS_RESPONSES,
)
async def alias_events(
    request: Request[Principal, str, State],
    state: State,
    last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID", required=False)] = None,
) -> ServerSentEvent:
    """`GET /api/v1/sessions/{id}/events` for the client key's session."""
    res = resources(state)
    row = await keyed_session(res, request.user)
    return await _events(res, row.id, last_event_id)
