"""One lifecycle for a session's row, its Redis state and its host, kept in agreement.

A session is live while its host keeps the state hash in Redis fresh (the hash expires a few seconds
after the host dies). A row that says the session is active while no host has held it for
``session_host_lost_seconds`` belongs to a session nobody will ever host again (its host died and
the work was lost with Redis, as when ``agentapi dev``'s in-memory Redis restarts): the reconciler
ends it with reason ``host_lost``, so its status stops saying ``running``, ``DELETE`` and the quota
see it ended, and its subscribers get ``session_ended``. Ending is a conditional update, so any
number of reconcilers (one per sessions worker) end a session once.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select, update

from events.audit import audit_event
from events.connection import pooled_redis
from events.envelope import Event, EventType
from events.publisher import publish
from events.results import append_result
from events.streams import Names
from schemas.db import TenantContext, dispose_engine, open_engine, tenant_transaction
from schemas.settings import Settings
from schemas.tables import UserSession

log = logging.getLogger(__name__)

ACTIVE = ("requested", "starting", "running", "stable")
STARTED = ("starting", "running", "stable")
FINISHED = ("ended", "failed")
REQUESTED_GRACE_FACTOR = 10
HOST_LOST = "host_lost"
# The column's width (migration 0010): a CLI's error text is kept whole, not cut mid-word at 64.
END_REASON_MAX = 1024
PLATFORM = TenantContext(org_id=None, user_id=None, role="superadmin")


async def host_is_live(redis: Redis, names: Names, session_id: UUID | str) -> bool:
    return bool(await redis.exists(names.session_state(session_id)))


async def end_session(
    engine: AsyncEngine,
    redis: Redis,
    names: Names,
    row: UserSession,
    reason: str,
    *,
    maxlen: int,
    correlation_id: str | None = None,
) -> UserSession | None:
    """End an active session that no host will end: the row, then ``session.ended`` for its
    subscribers and the audit trail. None when it was no longer active (another party ended it)."""
    now = datetime.now(UTC)
    reason = reason[:END_REASON_MAX]
    owner = TenantContext(org_id=row.org_id, user_id=row.user_id, role="owner")
    async with tenant_transaction(engine, owner) as db:
        result = await db.exec(
            update(UserSession)
            .where(
                col(UserSession.id) == row.id,
                col(UserSession.org_id) == row.org_id,
                col(UserSession.status).in_(ACTIVE),
            )
            .values(status="ended", end_reason=reason, ended_at=now, updated_at=now)
        )
        if not result.rowcount:
            return None
        ended = await db.get(UserSession, row.id, populate_existing=True)
    extra = {"correlation_id": correlation_id} if correlation_id else {}
    event = Event(
        type=EventType.SESSION_ENDED,
        org_id=row.org_id,
        user_id=row.user_id,
        session_id=row.id,
        payload={"reason": reason},
        **extra,
    )
    await append_result(redis, names, event, maxlen)
    await publish(
        redis,
        names,
        audit_event(
            org_id=row.org_id,
            actor_user_id=row.user_id,
            action="session.ended",
            outcome="success",
            resource_type="session",
            resource_id=str(row.id),
            details={"agent_type": row.agent_type, "reason": reason, "host": None},
            correlation_id=correlation_id,
            session_id=row.id,
        ),
    )
    log.info("session %s ended with reason %s (no live host)", row.id, reason)
    return ended


async def end_lost_sessions(
    engine: AsyncEngine,
    redis: Redis,
    names: Names,
    settings: Settings,
    org_id: UUID | None = None,
    grace_seconds: float | None = None,
) -> list[UUID]:
    """End the active sessions (of one org, or all) whose host has been gone longer than
    ``grace_seconds`` (default ``session_host_lost_seconds``)."""
    grace = settings.session_host_lost_seconds if grace_seconds is None else grace_seconds
    now = datetime.now(UTC)
    scope = PLATFORM if org_id is None else TenantContext(org_id=org_id, user_id=None, role="admin")
    # A request no host has taken yet may be waiting in its queue for a free worker thread (a busy
    # pool, workers starting): it gets ten times the grace before it counts as lost.
    query = select(UserSession).where(
        (
            (col(UserSession.status) == "requested")
            & (col(UserSession.updated_at) < now - timedelta(seconds=grace * REQUESTED_GRACE_FACTOR))
        )
        | (
            col(UserSession.status).in_(STARTED)
            & (col(UserSession.updated_at) < now - timedelta(seconds=grace))
        )
    )
    if org_id is not None:
        query = query.where(UserSession.org_id == org_id)
    async with tenant_transaction(engine, scope) as db:
        candidates = list(await db.exec(query))
    ended: list[UUID] = []
    for row in candidates:
        if await host_is_live(redis, names, row.id):
            continue
        if await end_session(engine, redis, names, row, HOST_LOST, maxlen=settings.event_log_maxlen):
            ended.append(row.id)
    return ended


async def end_sessions_of_last_run(settings: Settings) -> list[UUID]:
    """For a fresh, empty Redis (``agentapi dev``'s embedded one): every active session lost its
    host with the old Redis, and nothing will redeliver it, so none waits out the grace period."""
    engine = open_engine(settings, pool_size=1)
    redis = pooled_redis(settings.redis_url, wait_seconds=5)
    try:
        return await end_lost_sessions(engine, redis, Names(settings.redis_prefix), settings, grace_seconds=0)
    finally:
        await redis.aclose()
        await dispose_engine(engine)
