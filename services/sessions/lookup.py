"""Which sessions an actor may see: members their own, admins their organization's."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from sqlmodel import col, select

from schemas.db import MemberContext, tenant_transaction
from schemas.tables import SessionMessage, UserSession
from services.context import Backends
from services.errors import NotFound
from services.recent import Recent
from services.sessions.lifecycle import ACTIVE
from services.single_flight import SingleFlight

Query = TypeVar("Query", bound=Any)

# A storm of identical lookups (thousands of SSE clients joining one session) shares one query.
_session_lookups: SingleFlight[tuple[MemberContext, UUID], UserSession | None] = SingleFlight()


def scoped(query: Query, actor: MemberContext) -> Query:
    """Tenant filter in the query itself (RLS enforces the same underneath)."""
    query = query.where(UserSession.org_id == actor.org_id)
    if actor.role == "member":
        query = query.where(UserSession.user_id == actor.user_id)
    return query


async def find_session(backends: Backends, actor: MemberContext, session_id: UUID) -> UserSession:
    """The actor's tenant's session; another organization's id is indistinguishable from none."""

    async def lookup() -> UserSession | None:
        async with tenant_transaction(backends.engine, actor) as db:
            return (
                await db.exec(scoped(select(UserSession), actor).where(UserSession.id == session_id))
            ).first()

    row = await _session_lookups.run((actor, session_id), lookup)
    if row is None:
        raise NotFound("session not found")
    return row


# Active sessions' rows as the message path last read them, per caller. Under load one session's
# messages read the same row from PostgreSQL (a tenant transaction and the pool's ping) hundreds
# of times a second: 11 % of a message's CPU. Kept for a second, an end elsewhere (its host, the
# reconciler, another ingress process) is seen up to a second late: a message accepted in that
# second goes where one sent just before the end goes. This process's own stops forget at once.
ACTIVE_ROW_SECONDS = 1.0
_active_rows: Recent[UUID, tuple[MemberContext, UserSession]] = Recent(ACTIVE_ROW_SECONDS)


async def find_messageable_session(backends: Backends, actor: MemberContext, session_id: UUID) -> UserSession:
    """``find_session`` for the message path, from the second-old row of an active session."""
    cached = _active_rows.get(session_id, None)
    if cached is not None and cached[0] == actor:
        return cached[1]
    row = await find_session(backends, actor, session_id)
    if row.status in ACTIVE:
        _active_rows.put(session_id, (actor, row))
    return row


def forget_active_row(session_id: UUID) -> None:
    """This process ended or is ending the session: the message path reads its row afresh."""
    _active_rows.forget(session_id)


async def list_sessions(
    backends: Backends, actor: MemberContext, limit: int, after: tuple[datetime, UUID] | None
) -> list[UserSession]:
    """Newest first, after the ``(created_at, id)`` of a previous page's last; up to ``limit + 1``
    rows, so the caller can tell whether another page follows."""
    query = scoped(select(UserSession), actor)
    if after is not None:
        created, ident = after
        query = query.where(
            (col(UserSession.created_at) < created)
            | ((col(UserSession.created_at) == created) & (col(UserSession.id) < ident))
        )
    query = query.order_by(col(UserSession.created_at).desc(), col(UserSession.id).desc()).limit(limit + 1)
    async with tenant_transaction(backends.engine, actor) as db:
        return list(await db.exec(query))


async def session_messages(
    backends: Backends, actor: MemberContext, row: UserSession
) -> list[SessionMessage]:
    """The chat of a session the actor found, in order (message 0 is the start-up screen)."""
    async with tenant_transaction(backends.engine, actor) as db:
        return list(
            await db.exec(
                select(SessionMessage)
                .where(SessionMessage.session_id == row.id)
                .order_by(col(SessionMessage.seq))
            )
        )


async def active_session_ids(backends: Backends, actor: MemberContext) -> list[str]:
    """The actor's own sessions that are still active."""
    async with tenant_transaction(backends.engine, actor) as db:
        rows = await db.exec(
            select(UserSession.id).where(
                UserSession.org_id == actor.org_id,
                UserSession.user_id == actor.user_id,
                col(UserSession.status).in_(ACTIVE),
            )
        )
        return [str(session_id) for session_id in rows]
