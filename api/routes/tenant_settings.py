"""Tenant settings: one document per organization (admins), with write-only secrets sealed at rest.

``settings`` is free-form JSON (bounded in size) that features read, such as the CCRouter
providers; ``settings.auto_provision`` (``off | member | token_role``, default ``member``) says what a valid
token of a user who is not a member yet gets (api/tenancy.py); ``secrets`` are name → value pairs that are sealed with the key ring and never
returned (a PUT with ``null`` for a name deletes it); ``retention_days`` drives the retention job.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from litestar import Request, get, put
from litestar.datastructures import State
from litestar.exceptions import ClientException, PermissionDeniedException, ValidationException
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError
from sqlmodel import select

from api.auth import Principal
from api.problems import StrictBody
from api.state import Resources, resources
from api.tenancy import (
    AUTO_PROVISION_DEFAULT,
    AUTO_PROVISION_KEY,
    AUTO_PROVISION_POLICIES,
    tenant_context,
)
from schemas.agent_permissions import SETTINGS_KEY as PERMISSIONS_KEY
from schemas.agent_permissions import PermissionPolicy
from schemas.ccrouter import CCRouterSettings, missing_keys
from schemas.crypto import KeyRingError
from schemas.db import TenantContext, tenant_transaction
from schemas.roles import ADMIN_ROLES
from schemas.tables import TenantSettings, utcnow
from schemas.tenant_secrets import open_tenant_secrets, secrets_ref
from services.egress import EgressRefused, check_endpoint

MAX_SETTINGS_BYTES = 64 * 1024
SECRET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


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


def open_secrets(res: Resources, row: TenantSettings) -> dict[str, str]:
    return open_tenant_secrets(res.settings.key_ring(), row)


def _admin(principal: Principal) -> TenantContext:
    ctx = tenant_context(principal)
    if ctx.role not in ADMIN_ROLES:
        raise PermissionDeniedException("only organization admins manage tenant settings")
    return ctx


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


async def _load(res: Resources, ctx: TenantContext) -> TenantSettings | None:
    async with tenant_transaction(res.engine, ctx) as db:
        return (await db.exec(select(TenantSettings).where(TenantSettings.org_id == ctx.org_id))).first()


async def _check_ccrouter(res: Resources, raw: object, secret_names: set[str]) -> None:
    """422 naming each field of ``settings.ccrouter`` a session could not run with."""
    try:
        spec = CCRouterSettings.model_validate(raw)
    except PydanticValidationError as exc:
        raise ValidationException(
            "settings.ccrouter is not a valid Claude Code Router configuration",
            extra=[
                {
                    "key": "settings.ccrouter"
                    + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]),
                    "message": e["msg"],
                }
                for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from exc
    problems = []
    for index, provider in enumerate(spec.providers):
        try:
            await check_endpoint(
                provider.api_base_url, res.settings, f"settings.ccrouter.providers[{index}].api_base_url"
            )
        except EgressRefused as exc:
            problems.append({"key": exc.field, "message": exc.reason})
    problems += [
        {"key": field, "message": "names no stored secret: add it under `secrets` (write-only)"}
        for field in missing_keys(spec, secret_names, res.settings.vertex_ai_api_key is not None)
    ]
    if problems:
        raise ValidationException("settings.ccrouter cannot run sessions as it is", extra=problems)


@get("/api/v1/settings", tags=["settings"])
async def read_settings(request: Request[Principal, str, State], state: State) -> SettingsOut:
    """The organization's settings; secrets are listed by name only."""
    res = resources(state)
    ctx = _admin(request.user)
    row = await _load(res, ctx)
    assert ctx.org_id is not None
    return _out(ctx.org_id, row, list(open_secrets(res, row)) if row else [])


@put("/api/v1/settings", tags=["settings"])
async def write_settings(
    data: SettingsIn, request: Request[Principal, str, State], state: State
) -> SettingsOut:
    """Replace the settings and retention; merge the secrets (null deletes one)."""
    res = resources(state)
    ctx = _admin(request.user)
    assert ctx.org_id is not None
    if len(json.dumps(data.settings)) > MAX_SETTINGS_BYTES:
        raise ValidationException(
            f"settings exceed {MAX_SETTINGS_BYTES} bytes", extra=[{"key": "settings", "message": "too large"}]
        )
    policy = data.settings.get(AUTO_PROVISION_KEY, AUTO_PROVISION_DEFAULT)
    if policy not in AUTO_PROVISION_POLICIES:
        raise ValidationException(
            f"settings.{AUTO_PROVISION_KEY} must be one of {', '.join(AUTO_PROVISION_POLICIES)}",
            extra=[{"key": f"settings.{AUTO_PROVISION_KEY}", "message": "unknown policy"}],
        )
    if PERMISSIONS_KEY in data.settings:
        try:
            PermissionPolicy.model_validate(data.settings[PERMISSIONS_KEY])
        except PydanticValidationError as exc:
            raise ValidationException(
                f"settings.{PERMISSIONS_KEY} is not a valid permission policy",
                extra=[
                    {
                        "key": ".".join(["settings", PERMISSIONS_KEY, *map(str, error["loc"])]),
                        "message": error["msg"],
                    }
                    for error in exc.errors()
                ],
            ) from None
    bad = [name for name in data.secrets if not SECRET_NAME.match(name)]
    if bad:
        raise ValidationException(
            "secret names must start with a letter: letters, digits, '_', '.', '-'",
            extra=[{"key": f"secrets.{name}", "message": "invalid name"} for name in bad],
        )
    row = await _load(res, ctx) or TenantSettings(id=uuid4(), org_id=ctx.org_id)
    try:
        secrets = open_secrets(res, row)
        for name, value in data.secrets.items():
            if value is None:
                secrets.pop(name, None)
            else:
                secrets[name] = value
        if "ccrouter" in data.settings:
            await _check_ccrouter(res, data.settings["ccrouter"], set(secrets))
        row.encrypted_secrets = (
            res.settings.key_ring().encrypt(json.dumps(secrets), secrets_ref(row)) if secrets else None
        )
    except KeyRingError as exc:
        raise ClientException(str(exc), status_code=503) from exc
    row.settings, row.retention_days, row.updated_at = data.settings, data.retention_days, utcnow()
    async with tenant_transaction(res.engine, ctx) as db:
        await db.merge(row)
    return _out(ctx.org_id, row, list(secrets))
