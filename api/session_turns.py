"""The ingress's side of a session's live state in Redis (the hash its host keeps).

A user message is queued only by a compare-and-set on that hash (``events.session_state``), so two
concurrent messages cannot both start a turn, and a ``GET /status`` straight after ``POST /message``
reads ``running`` (coder/agentapi answers only once the agent has started).
"""

from __future__ import annotations

from uuid import UUID

from redis.asyncio import Redis

from events import replies
from events.session_state import start_turn
from events.streams import Names

__all__ = ["DETAIL_BY_SESSION_STATUS", "live_state", "start_turn"]


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
