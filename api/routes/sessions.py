"""Agent sessions: create, read, and follow over SSE."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import Parameter
from litestar.response import ServerSentEvent
from pydantic import BaseModel, Field, field_validator
from sqlmodel import select

from api.auth import Principal
from api.correlation import current_correlation_id
from api.problems import StrictBody
from api.sse import parse_last_event_id, session_event_stream
from api.state import resources
from api.tenancy import ensure_member, tenant_context
from events.envelope import Event, EventType
from events.publisher import publish
from schemas.db import tenant_transaction
from schemas.tables import UserSession
from workers.agents import canonical_agent_type


class CreateSession(StrictBody):
    agent_type: str = Field(min_length=1, max_length=32, description="claude, ccrouter (ccr), codex, ...")
    prompt: str | None = Field(None, max_length=100_000, description="first message for the agent")
    title: str | None = Field(None, max_length=200)

    @field_validator("agent_type")
    @classmethod
    def _known_agent(cls, value: str) -> str:
        return canonical_agent_type(value)


class SessionOut(BaseModel):
    id: UUID
    org_id: UUID
    user_id: UUID
    agent_type: str
    status: str
    title: str | None
    created_at: datetime
    events_url: str


class SessionAccepted(SessionOut):
    event_id: str


def _out(row: UserSession) -> dict[str, object]:
    return {
        "id": row.id,
        "org_id": row.org_id,
        "user_id": row.user_id,
        "agent_type": row.agent_type,
        "status": row.status,
        "title": row.title,
        "created_at": row.created_at,
        "events_url": f"/api/v1/sessions/{row.id}/events",
    }


class SessionController(Controller):
    path = "/api/v1/sessions"
    tags = ["sessions"]

    @post("/", status_code=202)
    async def create_session(
        self, data: CreateSession, request: Request[Principal, str, State], state: State
    ) -> SessionAccepted:
        """Request a new agent session; its progress arrives on `events_url`."""
        res = resources(state)
        ctx = tenant_context(request.user)
        async with tenant_transaction(res.engine, ctx) as db:
            await ensure_member(db, request.user)
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
            payload={"agent_type": row.agent_type, "prompt": data.prompt},
        )
        await publish(res.redis, res.names, event)
        return SessionAccepted(**_out(row), event_id=event.id)  # type: ignore[arg-type]

    @get("/{session_id:uuid}")
    async def get_session(
        self, session_id: UUID, request: Request[Principal, str, State], state: State
    ) -> SessionOut:
        row = await _find_session(state, request.user, session_id)
        return SessionOut(**_out(row))  # type: ignore[arg-type]

    @get("/{session_id:uuid}/events", timeout=None)
    async def session_events(
        self,
        session_id: UUID,
        request: Request[Principal, str, State],
        state: State,
        last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID", required=False)] = None,
    ) -> ServerSentEvent:
        """SSE: replays the session's event log after Last-Event-ID, then relays live events."""
        res = resources(state)
        await _find_session(state, request.user, session_id)
        after = parse_last_event_id(last_event_id)
        if last_event_id and after is None:
            raise ValidationException("Last-Event-ID must be an event-log id such as 1732460000000-0")
        return ServerSentEvent(
            session_event_stream(
                res.redis, res.names, res.hub, str(session_id), after, res.settings.sse_heartbeat_seconds
            ),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


async def _find_session(state: State, principal: Principal, session_id: UUID) -> UserSession:
    """The caller's tenant's session, or 404: another org's id is indistinguishable from none."""
    res = resources(state)
    ctx = tenant_context(principal)
    async with tenant_transaction(res.engine, ctx) as db:
        query = select(UserSession).where(UserSession.id == session_id, UserSession.org_id == ctx.org_id)
        if ctx.role == "member":
            query = query.where(UserSession.user_id == ctx.user_id)
        row = (await db.exec(query)).first()
    if row is None:
        raise NotFoundException("session not found")
    return row
