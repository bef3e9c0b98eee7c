"""Ending a user's live sessions in one organization when they leave it (removed or erased): a
removed member's agents kept running with valid gateway keys. Each live session's host is asked
to stop through its input stream, which ends the agent and retires its gateway token."""

from __future__ import annotations

from uuid import UUID

from sqlmodel import col, select

from api.state import Resources
from events.payloads import Stop
from events.session_state import queue_input
from schemas.tables import UserSession

ACTIVE = ("requested", "starting", "running", "stable")


async def live_session_ids(db, org_id: UUID, user_id: UUID) -> list[UUID]:
    return list(
        await db.exec(
            select(UserSession.id).where(
                UserSession.org_id == org_id,
                UserSession.user_id == user_id,
                col(UserSession.status).in_(ACTIVE),
            )
        )
    )


async def stop_sessions(res: Resources, session_ids: list[UUID]) -> None:
    for session_id in session_ids:
        await queue_input(res.redis, res.names, session_id, Stop())
