"""``GET /api/v1/audit``: the organization's audit trail for its admins, newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Request, get
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException, ValidationException
from litestar.params import Parameter
from pydantic import BaseModel
from sqlmodel import col, select

from api.auth import Principal
from api.pagination import cursor_value, encode_cursor
from api.state import resources
from api.tenancy import tenant_context
from schemas.db import tenant_transaction
from schemas.roles import ADMIN_ROLES
from schemas.tables import AuditLog


class AuditEntry(BaseModel):
    id: UUID
    seq: int
    event_id: str
    ts: datetime
    actor_user_id: UUID | None
    action: str
    resource_type: str | None
    resource_id: str | None
    outcome: str
    ip: str | None
    user_agent: str | None
    correlation_id: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_cursor: str | None


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
        raise ValidationException(
            f"{name} must be an RFC 3339 date-time between years 1 and 9999 in UTC",
            extra=[{"key": name, "message": "not a date-time"}],
        ) from exc


@get("/api/v1/audit", tags=["audit"])
async def query_audit(
    request: Request[Principal, str, State],
    state: State,
    actor: UUID | None = None,
    action: Annotated[str | None, Parameter(max_length=100, description="prefix of the action")] = None,
    resource_type: Annotated[str | None, Parameter(max_length=64)] = None,
    resource_id: Annotated[str | None, Parameter(max_length=128)] = None,
    outcome: Literal["success", "failure", "denied", "error"] | None = None,
    since: Annotated[str | None, Parameter(max_length=64, schema_extra={"format": "date-time"})] = None,
    until: Annotated[str | None, Parameter(max_length=64, schema_extra={"format": "date-time"})] = None,
    limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Parameter(max_length=100)] = None,
) -> AuditPage:
    """The organization's audit entries with filters; `next_cursor` pages towards older entries."""
    res = resources(state)
    ctx = tenant_context(request.user)
    if ctx.role not in ADMIN_ROLES:
        raise PermissionDeniedException("only organization admins read the audit trail")
    query = select(AuditLog).where(AuditLog.org_id == ctx.org_id)
    if actor:
        query = query.where(AuditLog.actor_user_id == actor)
    if action:
        query = query.where(col(AuditLog.action).startswith(action, autoescape=True))
    if resource_type:
        query = query.where(AuditLog.resource_type == resource_type)
    if resource_id:
        query = query.where(AuditLog.resource_id == resource_id)
    if outcome:
        query = query.where(AuditLog.outcome == outcome)
    if since is not None:
        query = query.where(col(AuditLog.ts) >= _instant("since", since))
    if until is not None:
        query = query.where(col(AuditLog.ts) < _instant("until", until))
    if cursor:
        query = query.where(col(AuditLog.seq) < cursor_value(cursor, int))
    async with tenant_transaction(res.engine, ctx) as db:
        rows = list(await db.exec(query.order_by(col(AuditLog.seq).desc()).limit(limit + 1)))
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].seq) if len(rows) > limit else None
    return AuditPage(entries=[AuditEntry(**r.model_dump()) for r in page], next_cursor=next_cursor)
