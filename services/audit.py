"""Reading the organization's audit trail (its admins), newest first. Writing it is the audit
writer's job (``workers.audit_writer``); producers build ``audit.recorded`` events (``events.audit``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sqlmodel import col, select

from schemas.db import MemberContext, tenant_transaction
from schemas.roles import ADMIN_ROLES
from schemas.tables import AuditLog
from services.context import Backends
from services.errors import Forbidden, Invalid


def _instant(name: str, value: str) -> datetime:
    """An RFC 3339 date-time as the documented schema says: not a number of seconds (``0.5`` was
    taken as one), and within the years PostgreSQL and Python share once moved to UTC
    (``0001-01-01T00:00:00+14:00`` overflowed into a 500)."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise Invalid.field(
            name,
            "not a date-time",
            detail=f"{name} must be an RFC 3339 date-time between years 1 and 9999 in UTC",
        ) from exc


def admin_only(ctx: MemberContext) -> MemberContext:
    if ctx.role not in ADMIN_ROLES:
        raise Forbidden("only organization admins read the audit trail")
    return ctx


@dataclass(frozen=True)
class AuditFilter:
    actor: UUID | None = None
    # A prefix of the action.
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    outcome: str | None = None
    # RFC 3339 date-times, as the caller sent them.
    since: str | None = None
    until: str | None = None
    # Entries older than this sequence number (the previous page's last).
    before_seq: int | None = None


async def query_audit(
    backends: Backends, ctx: MemberContext, where: AuditFilter, limit: int
) -> list[AuditLog]:
    """Up to ``limit + 1`` entries, so the caller tells whether another page follows."""
    admin_only(ctx)
    query = select(AuditLog).where(AuditLog.org_id == ctx.org_id)
    if where.actor:
        query = query.where(AuditLog.actor_user_id == where.actor)
    if where.action:
        query = query.where(col(AuditLog.action).startswith(where.action, autoescape=True))
    if where.resource_type:
        query = query.where(AuditLog.resource_type == where.resource_type)
    if where.resource_id:
        query = query.where(AuditLog.resource_id == where.resource_id)
    if where.outcome:
        query = query.where(AuditLog.outcome == where.outcome)
    if where.since is not None:
        query = query.where(col(AuditLog.ts) >= _instant("since", where.since))
    if where.until is not None:
        query = query.where(col(AuditLog.ts) < _instant("until", where.until))
    if where.before_seq is not None:
        query = query.where(col(AuditLog.seq) < where.before_seq)
    async with tenant_transaction(backends.engine, ctx) as db:
        return list(await db.exec(query.order_by(col(AuditLog.seq).desc()).limit(limit + 1)))
