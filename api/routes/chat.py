"""Chat: one call to talk to an agent (an existing session, or a new one), and one stream for
everything the caller's sessions say."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Response, ServerSentEvent
from pydantic import BaseModel, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from api.auth import Principal
from api.problems import StrictBody, problem_responses
from api.session_bodies import MAX_MESSAGE_BYTES, CreateSession
from api.sse import chat_event_stream, sse_response
from api.state import resources
from api.tenancy import tenant_context
from services.sessions.input import chat_message
from services.sessions.lookup import active_session_ids
from services.sessions.start import start_session


class ChatIn(StrictBody):
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_BYTES)
    type: Literal["user", "raw"] = "user"
    session_id: UUID | None = Field(None, description="an existing session; omit to start one")
    agent_type: str | None = Field(None, min_length=1, max_length=32, description="for a new session")
    custom_agent: str | None = Field(None, max_length=64)
    title: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _target(self) -> ChatIn:
        if self.session_id is None and self.agent_type is None:
            raise ValueError("give session_id (an existing session) or agent_type (to start one)")
        if self.session_id is not None and (self.agent_type or self.custom_agent or self.title):
            raise ValueError("agent_type, custom_agent and title are only for a new session")
        if self.session_id is None and self.type == "raw":
            raise ValueError("a new session starts with a user message, not raw keys")
        return self


class ChatOut(BaseModel):
    session_id: UUID
    created: bool
    events_url: str
    event_id: str | None = None


@post(
    "/api/v1/chat",
    tags=["chat"],
    status_code=202,
    responses={
        200: ResponseSpec(data_container=ChatOut, description="Delivered to an existing session"),
        **problem_responses(410),
    },
)
async def chat(data: ChatIn, request: Request[Principal, str, State], state: State) -> Response[ChatOut]:
    """Send a message to one of your sessions (200), or start a session with it (202)."""
    res, actor = resources(state), tenant_context(request.user)
    if data.session_id is not None:
        row = await chat_message(res, actor, data.session_id, data.content, data.type)
        out = ChatOut(session_id=row.id, created=False, events_url=f"/api/v1/sessions/{row.id}/events")
        return Response(out, status_code=200)
    try:
        create = CreateSession(
            agent_type=str(data.agent_type),
            prompt=data.content,
            title=data.title,
            custom_agent=data.custom_agent,
        )
    except PydanticValidationError as exc:
        raise ValidationException(
            "the new session's settings are invalid",
            extra=[{"key": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()],
        ) from exc
    row, event = await start_session(res, actor, create.new_session())
    out = ChatOut(
        session_id=row.id, created=True, events_url=f"/api/v1/sessions/{row.id}/events", event_id=event.id
    )
    return Response(out, status_code=202)


@get("/api/v1/chat/stream", tags=["chat"], timeout=None, media_type="text/event-stream")
async def chat_stream(request: Request[Principal, str, State], state: State) -> ServerSentEvent:
    """SSE: live events of all your active sessions, each with `session_id`."""
    res, actor = resources(state), tenant_context(request.user)

    async def active_sessions() -> list[str]:
        return await active_session_ids(res, actor)

    return await sse_response(
        res.redis,
        chat_event_stream(res.redis, res.names, res.hub, active_sessions, res.settings.sse_heartbeat_seconds),
        res.streams,
    )
