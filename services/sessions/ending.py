"""Stopping sessions: one at its user's request, or all of a member's when they leave."""

from __future__ import annotations

from uuid import UUID

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from schemas.db import TenantContext, tenant_transaction
from schemas.tables import UserSession
from services.context import Backends, current_correlation_id
from services.sessions.input import request_stop
from services.sessions.lifecycle import ACTIVE, end_session, host_is_live
from services.sessions.lookup import forget_active_row


async def stop_session(backends: Backends, row: UserSession) -> tuple[UserSession, bool]:
    """Stop a session whatever state its host is in: a live host is asked to stop it (and says so
    on the event log); with no host, the row is ended here. Whether a host is stopping it."""
    forget_active_row(row.id)
    if row.status not in ACTIVE:
        return row, False
    # Asked in any case: a host that is starting right now finds the request when it reads its input.
    await request_stop(backends, row.id)
    if await host_is_live(backends.redis, backends.names, row.id):
        return row, True
    ended = await end_session(
        backends.engine,
        backends.redis,
        backends.names,
        row,
        "stopped",
        maxlen=backends.settings.event_log_maxlen,
        correlation_id=current_correlation_id(),
    )
    if ended is None:  # its host ended it meanwhile
        ended = await _reload(backends, row)
    return ended, False


async def _reload(backends: Backends, row: UserSession) -> UserSession:
    owner = TenantContext(org_id=row.org_id, user_id=row.user_id, role="owner")
    async with tenant_transaction(backends.engine, owner) as db:
        return await db.get(UserSession, row.id) or row


async def live_session_ids(db: AsyncSession, org_id: UUID, user_id: UUID) -> list[UUID]:
    """A member's active sessions in one organization, read in the caller's transaction."""
    return list(
        await db.exec(
            select(UserSession.id).where(
                UserSession.org_id == org_id,
                UserSession.user_id == user_id,
                col(UserSession.status).in_(ACTIVE),
            )
        )
    )


async def stop_sessions(backends: Backends, session_ids: list[UUID]) -> None:
    """End a removed or erased member's sessions: a removed member's agents kept running with valid
    gateway keys. Each host stops its agent and retires its gateway token."""
    for session_id in session_ids:
        await request_stop(backends, session_id)
