"""A session's live state: the hash its host keeps in Redis, read for ``GET /status``.

A user message is queued only by a compare-and-set on that hash (``events.session_state``), so two
concurrent messages cannot both start a turn, and a ``GET /status`` straight after ``POST /message``
reads ``running`` (coder/agentapi answers only once the agent has started).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from redis.asyncio import Redis

from events import replies
from events.streams import Names
from schemas.settings import Transport, is_transport
from schemas.tables import UserSession
from services.context import Backends
from services.sessions.lifecycle import ACTIVE

# What `detail` says when the host has not said more, by the row's lifecycle status.
DETAIL_BY_SESSION_STATUS = {
    "requested": "starting",
    "starting": "starting",
    "running": "thinking",
    "stable": "waiting_for_input",
    "failed": "error",
}


async def live_state(redis: Redis, names: Names, session_id: UUID) -> dict[str, str]:
    """The host's hash (status, detail, host, heartbeat); empty when no host holds the session."""
    return replies.fields(await redis.hgetall(names.session_state(session_id)))


@dataclass(frozen=True)
class SessionStatus:
    # coder/agentapi's two values: an ended or failed session reads stable, so polling stops.
    agent_status: Literal["running", "stable"]
    backend: Transport
    session_status: str
    detail: str | None
    end_reason: str | None


async def session_status(backends: Backends, row: UserSession) -> SessionStatus:
    """A live agent is ``running`` unless its host says it settled; an ended one is ``stable``
    with its reason. The backend is the one the host chose, before it has the configured one."""
    configured = backends.settings.transport_of(row.agent_type)
    if row.status not in ACTIVE:
        return SessionStatus(
            "stable", configured, row.status, DETAIL_BY_SESSION_STATUS.get(row.status), row.end_reason
        )
    live = await live_state(backends.redis, backends.names, row.id)
    chosen = live.get("transport")
    return SessionStatus(
        "stable" if live.get("status") == "stable" else "running",
        chosen if is_transport(chosen) else configured,
        row.status,
        live.get("detail") or DETAIL_BY_SESSION_STATUS.get(live.get("status") or row.status),
        None,
    )
