"""Per-session controls beyond coder/agentapi v0.12's four calls: interrupting the agent, and its
hidden ``GET /internal/screen`` (the current screen as text) that clients such as mcp-agentapi read."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import ServerSentEventMessage
from pydantic import BaseModel

from api.auth import Principal
from api.problems import problem_responses
from api.session_alias import ALIAS_OPT, ALIAS_RESPONSES, ALIAS_SECURITY, ALIAS_TAGS, keyed_session
from api.sse import sse_response
from api.state import Resources, resources
from api.tenancy import tenant_context
from events import replies
from services.sessions.input import request_interrupt
from services.sessions.live import live_state
from services.sessions.lookup import find_session

# How often a waiting interrupt or a screen stream looks at Redis again.
POLL_SECONDS = 0.05
SCREEN_POLL_SECONDS = 0.25
DEFAULT_SETTLE_WAIT = 10.0


class Interrupted(BaseModel):
    ok: bool = True
    status: str
    waited_seconds: float


class Screen(BaseModel):
    screen: str


@post(
    "/api/v1/sessions/{session_id:uuid}/interrupt",
    status_code=200,
    tags=["sessions"],
    responses=problem_responses(410),
)
async def interrupt(
    session_id: UUID,
    request: Request[Principal, str, State],
    state: State,
    wait_seconds: Annotated[float, Parameter(ge=0, le=60)] = DEFAULT_SETTLE_WAIT,
) -> Interrupted:
    """Send the agent's own interrupt keys (Esc for Claude Code, Codex, Gemini CLI; Ctrl-C for Aider
    and goose) and answer once it is stable again, or after `wait_seconds` with its status then."""
    res = resources(state)
    row = await find_session(res, tenant_context(request.user), session_id)
    started = time.monotonic()
    await request_interrupt(res, row)
    status = await _settled(res, session_id, started + wait_seconds)
    return Interrupted(status=status, waited_seconds=round(time.monotonic() - started, 3))


async def _settled(res: Resources, session_id: UUID, deadline: float) -> str:
    # The host may still read stable from before the keys arrived: give it a settle window's head
    # start, so "stable" means the agent stopped, not that it had not yet noticed.
    await asyncio.sleep(min(res.settings.agent_settle_seconds, max(0.0, deadline - time.monotonic())))
    while True:
        status = (await live_state(res.redis, res.names, session_id)).get("status", "stable")
        if status == "stable" or time.monotonic() >= deadline:
            return "stable" if status == "stable" else "running"
        await asyncio.sleep(POLL_SECONDS)


@get("/api/v1/sessions/{session_id:uuid}/internal/screen", tags=["sessions"], timeout=None)
async def internal_screen(
    session_id: UUID, request: Request[Principal, str, State], state: State
) -> Response[Any]:
    """coder/agentapi's screen: with `Accept: text/event-stream`, SSE `screen` events `{screen}` as
    the screen changes (as theirs); otherwise the current screen as JSON `{screen}`. Empty while
    no host holds the session."""
    res = resources(state)
    await find_session(res, tenant_context(request.user), session_id)
    return await _screen(res, request, session_id)


@get(
    "/internal/screen",
    timeout=None,
    opt=ALIAS_OPT,
    security=ALIAS_SECURITY,
    tags=ALIAS_TAGS,
    responses=ALIAS_RESPONSES,
)
async def alias_internal_screen(request: Request[Principal, str, State], state: State) -> Response[Any]:
    """`GET /api/v1/sessions/{id}/internal/screen` for the client key's session (api.session_alias)."""
    res = resources(state)
    row = await keyed_session(res, request.user)
    return await _screen(res, request, row.id)


async def _screen(res: Resources, request: Request[Principal, str, State], session_id: UUID) -> Response[Any]:
    key = res.names.session_screen(session_id)
    if "text/event-stream" not in request.headers.get("accept", ""):
        return Response(Screen(screen=await res.redis.get(key) or ""))
    return await sse_response(res.redis, _screens(res, key), res.streams)


async def _screens(res: Resources, key: str) -> AsyncIterator[ServerSentEventMessage]:
    last: str | None = None
    while True:
        screen = replies.optional_text(await res.redis.get(key)) or ""
        if screen != last:
            last = screen
            yield ServerSentEventMessage(event="screen", data=json.dumps({"screen": screen}))
        await asyncio.sleep(SCREEN_POLL_SECONDS)
