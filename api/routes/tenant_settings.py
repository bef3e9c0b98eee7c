"""Tenant settings (``services.tenant_settings``): one document per organization (admins), with
write-only secrets sealed at rest and never returned (a PUT with ``null`` for a name deletes it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from litestar import Request, get, put
from litestar.datastructures import State
from pydantic import BaseModel, Field

from api.auth import Principal
from api.problems import StrictBody
from api.state import resources
from api.tenancy import tenant_context
from schemas.tables import TenantSettings
from services import tenant_settings as service


class SettingsIn(StrictBody):
    settings: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, str | None] = Field(
        default_factory=dict, max_length=50, description="write-only; null deletes a secret"
    )
    retention_days: int | None = Field(None, ge=1, le=3650)


class SettingsOut(BaseModel):
    org_id: UUID
    settings: dict[str, Any]
    secret_names: list[str]
    retention_days: int | None
    updated_at: datetime | None


def _out(org_id: UUID, row: TenantSettings | None, names: list[str]) -> SettingsOut:
    if row is None:
        return SettingsOut(org_id=org_id, settings={}, secret_names=[], retention_days=None, updated_at=None)
    return SettingsOut(
        org_id=org_id,
        settings=row.settings,
        secret_names=sorted(names),
        retention_days=row.retention_days,
        updated_at=row.updated_at,
    )


@get("/api/v1/settings", tags=["settings"])
async def read_settings(request: Request[Principal, str, State], state: State) -> SettingsOut:
    """The organization's settings; secrets are listed by name only."""
    ctx = service.admin_only(tenant_context(request.user))
    row, names = await service.read_settings(resources(state), ctx)
    return _out(ctx.org_id, row, names)


@put("/api/v1/settings", tags=["settings"])
async def write_settings(
    data: SettingsIn, request: Request[Principal, str, State], state: State
) -> SettingsOut:
    """Replace the settings and retention; merge the secrets (null deletes one)."""
    ctx = service.admin_only(tenant_context(request.user))
    change = service.SettingsChange(data.settings, data.secrets, data.retention_days)
    row, names = await service.write_settings(resources(state), ctx, change)
    return _out(ctx.org_id, row, names)
