"""Tenant settings: one document per organization (admins), with write-only secrets sealed at rest.

``settings`` is free-form JSON (bounded in size) that features read, such as the CCRouter
providers; ``settings.auto_provision`` (``off | member | token_role``, default ``member``) says what
a valid token of a user who is not a member yet gets (api/tenancy.py);
``settings.members_may_add_stdio`` (default false) lets members add stdio MCP servers of their own
(admins always may: a stdio server runs a command on the tools worker); ``secrets`` are name → value
pairs that are sealed with the key ring and never returned (``None`` for a name deletes it);
``retention_days`` drives the retention job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from pydantic import ValidationError as PydanticValidationError
from sqlmodel import select

from schemas.agent_permissions import SETTINGS_KEY as PERMISSIONS_KEY
from schemas.agent_permissions import PermissionPolicy
from schemas.ccrouter import CCRouterSettings, missing_keys
from schemas.crypto import KeyRingError
from schemas.db import MemberContext, TenantContext, tenant_transaction
from schemas.roles import ADMIN_ROLES
from schemas.tables import TenantSettings, utcnow
from schemas.tenant_secrets import open_tenant_secrets, secrets_ref
from services.context import Backends
from services.egress import EgressRefused, check_endpoint
from services.errors import Forbidden, Invalid, Unavailable

AUTO_PROVISION_KEY = "auto_provision"
AUTO_PROVISION_POLICIES = ("off", "member", "token_role")
AUTO_PROVISION_DEFAULT = "member"
MEMBERS_STDIO_KEY = "members_may_add_stdio"
MAX_SETTINGS_BYTES = 64 * 1024
SECRET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class SettingsChange:
    settings: dict[str, Any]
    # Merged into the stored ones; None deletes a secret.
    secrets: dict[str, str | None]
    retention_days: int | None


def admin_only(ctx: MemberContext) -> MemberContext:
    if ctx.role not in ADMIN_ROLES:
        raise Forbidden("only organization admins manage tenant settings")
    return ctx


async def _load(backends: Backends, ctx: MemberContext) -> TenantSettings | None:
    async with tenant_transaction(backends.engine, ctx) as db:
        return (await db.exec(select(TenantSettings).where(TenantSettings.org_id == ctx.org_id))).first()


async def members_may_add_stdio(backends: Backends, ctx: TenantContext) -> bool:
    async with tenant_transaction(backends.engine, ctx) as db:
        row = (await db.exec(select(TenantSettings).where(TenantSettings.org_id == ctx.org_id))).first()
    return bool(row and row.settings.get(MEMBERS_STDIO_KEY) is True)


async def read_settings(backends: Backends, ctx: MemberContext) -> tuple[TenantSettings | None, list[str]]:
    """The organization's settings row (None before the first write) and its secrets' names."""
    row = await _load(backends, ctx)
    return row, list(open_tenant_secrets(backends.settings.key_ring(), row)) if row else []


def _check_document(settings: dict[str, Any]) -> None:
    if len(json.dumps(settings)) > MAX_SETTINGS_BYTES:
        raise Invalid(f"settings exceed {MAX_SETTINGS_BYTES} bytes", [("settings", "too large")])
    policy = settings.get(AUTO_PROVISION_KEY, AUTO_PROVISION_DEFAULT)
    if policy not in AUTO_PROVISION_POLICIES:
        raise Invalid.field(
            f"settings.{AUTO_PROVISION_KEY}",
            "unknown policy",
            detail=f"settings.{AUTO_PROVISION_KEY} must be one of {', '.join(AUTO_PROVISION_POLICIES)}",
        )
    if not isinstance(settings.get(MEMBERS_STDIO_KEY, False), bool):
        raise Invalid.field(
            f"settings.{MEMBERS_STDIO_KEY}",
            "must be true or false",
            detail=f"settings.{MEMBERS_STDIO_KEY} must be true or false",
        )
    if PERMISSIONS_KEY in settings:
        try:
            PermissionPolicy.model_validate(settings[PERMISSIONS_KEY])
        except PydanticValidationError as exc:
            raise Invalid(
                f"settings.{PERMISSIONS_KEY} is not a valid permission policy",
                [
                    (".".join(["settings", PERMISSIONS_KEY, *map(str, e["loc"])]), e["msg"])
                    for e in exc.errors()
                ],
            ) from None


async def _check_ccrouter(backends: Backends, raw: object, secret_names: set[str]) -> None:
    """Refuses, naming each field, a ``settings.ccrouter`` a session could not run with."""
    try:
        spec = CCRouterSettings.model_validate(raw)
    except PydanticValidationError as exc:
        raise Invalid(
            "settings.ccrouter is not a valid Claude Code Router configuration",
            [
                (
                    "settings.ccrouter"
                    + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]),
                    e["msg"],
                )
                for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from exc
    problems = []
    for index, provider in enumerate(spec.providers):
        try:
            await check_endpoint(
                provider.api_base_url, backends.settings, f"settings.ccrouter.providers[{index}].api_base_url"
            )
        except EgressRefused as exc:
            problems.append((exc.field, exc.reason))
    problems += [
        (field, "names no stored secret: add it under `secrets` (write-only)")
        for field in missing_keys(spec, secret_names, backends.settings.vertex_ai_api_key is not None)
    ]
    if problems:
        raise Invalid("settings.ccrouter cannot run sessions as it is", problems)


async def write_settings(
    backends: Backends, ctx: MemberContext, change: SettingsChange
) -> tuple[TenantSettings, list[str]]:
    """Replaces the settings and retention and merges the secrets; the row and the secrets' names."""
    _check_document(change.settings)
    bad = [name for name in change.secrets if not SECRET_NAME.match(name)]
    if bad:
        raise Invalid(
            "secret names must start with a letter: letters, digits, '_', '.', '-'",
            [(f"secrets.{name}", "invalid name") for name in bad],
        )
    row = await _load(backends, ctx) or TenantSettings(id=uuid4(), org_id=ctx.org_id)
    try:
        ring = backends.settings.key_ring()
        secrets = open_tenant_secrets(ring, row)
        for name, value in change.secrets.items():
            if value is None:
                secrets.pop(name, None)
            else:
                secrets[name] = value
        if "ccrouter" in change.settings:
            await _check_ccrouter(backends, change.settings["ccrouter"], set(secrets))
        row.encrypted_secrets = ring.encrypt(json.dumps(secrets), secrets_ref(row)) if secrets else None
    except KeyRingError as exc:
        raise Unavailable(str(exc)) from exc
    row.settings, row.retention_days, row.updated_at = change.settings, change.retention_days, utcnow()
    async with tenant_transaction(backends.engine, ctx) as db:
        await db.merge(row)
    return row, list(secrets)
