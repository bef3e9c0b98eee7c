"""``GET /api/v1/audit``: the organization's audit trail for its admins, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import Parameter
from pydantic import BaseModel

from api.auth import Principal
from api.pagination import cursor_value, encode_cursor
from api.state import resources
from api.tenancy import tenant_context
from services import audit as service


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
    ctx = service.admin_only(tenant_context(request.user))
    where = service.AuditFilter(
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        outcome=outcome,
        since=since,
        until=until,
        before_seq=cursor_value(cursor, int) if cursor else None,
    )
    rows = await service.query_audit(resources(state), ctx, where, limit)
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].seq) if len(rows) > limit else None
    return AuditPage(entries=[AuditEntry(**r.model_dump()) for r in page], next_cursor=next_cursor)
