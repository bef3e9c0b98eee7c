"""MCP configurations: which a user sees (the organization's and their own), and saving one
(checked for SSRF and the stdio allowlist, its secret sealed) or deleting it (its OAuth grants
revoked first). Connecting to an MCP server is always a ``tools`` worker's job, never this one's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID, uuid4

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from schemas.crypto import KeyRing, KeyRingError, SecretRef
from schemas.db import TenantContext, tenant_transaction
from schemas.roles import ADMIN_ROLES
from schemas.settings import Settings
from schemas.tables import McpConfiguration, McpOAuthToken, utcnow
from services.context import Backends
from services.egress import EgressRefused, check_endpoint, check_stdio
from services.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from services.mcp.changes import announce_change
from services.mcp.oauth_grants import revoke_grants
from services.tenant_settings import MEMBERS_STDIO_KEY, members_may_add_stdio

Query = TypeVar("Query", bound=Any)


@dataclass(frozen=True)
class ConfigSpec:
    """A configuration as the caller wants it saved (its shape already checked)."""

    name: str
    scope: str
    transport: str
    endpoint_url: str | None
    command: str | None
    args: list[str]
    env: dict[str, str]
    auth_type: str
    # Stored OAuth client settings (client_id, scopes, authorization_server…), without the secret.
    oauth: dict[str, Any]
    enabled: bool
    # Write-only: a bearer token or an OAuth client's secret; None keeps none or the stored one.
    secret: str | None


def effective(query: Query, ctx: TenantContext) -> Query:
    """The org's configurations and the caller's own (RLS enforces the same underneath)."""
    return query.where(
        McpConfiguration.org_id == ctx.org_id,
        or_(col(McpConfiguration.user_id).is_(None), McpConfiguration.user_id == ctx.user_id),
    )


async def connections(db: AsyncSession, ctx: TenantContext, config_ids: list[UUID]) -> dict[UUID, str]:
    """The caller's OAuth connection state per configuration (never the tokens)."""
    if not config_ids:
        return {}
    rows = await db.exec(
        select(McpOAuthToken.configuration_id, McpOAuthToken.status).where(
            McpOAuthToken.user_id == ctx.user_id, col(McpOAuthToken.configuration_id).in_(config_ids)
        )
    )
    return {config_id: status for config_id, status in rows}


def key_ring(settings: Settings) -> KeyRing:
    try:
        return settings.key_ring()
    except KeyRingError as exc:
        raise Unavailable(str(exc)) from exc


async def find_config(backends: Backends, ctx: TenantContext, config_id: UUID) -> McpConfiguration:
    async with tenant_transaction(backends.engine, ctx) as db:
        row = (
            await db.exec(effective(select(McpConfiguration), ctx).where(McpConfiguration.id == config_id))
        ).first()
    if row is None:
        raise NotFound("no such MCP configuration")
    return row


async def enabled_configs(backends: Backends, ctx: TenantContext) -> list[McpConfiguration]:
    """The configurations whose tools a session of the caller's offers its agent."""
    async with tenant_transaction(backends.engine, ctx) as db:
        return list(
            await db.exec(
                effective(select(McpConfiguration), ctx).where(col(McpConfiguration.enabled).is_(True))
            )
        )


async def list_configs(
    backends: Backends, ctx: TenantContext, limit: int, after: tuple[str, UUID] | None
) -> tuple[list[McpConfiguration], dict[UUID, str]]:
    """By name, after the ``(name, id)`` of a previous page's last: up to ``limit + 1`` rows (so the
    caller tells whether another page follows), with the caller's OAuth connections to the first
    ``limit``."""
    query = effective(select(McpConfiguration), ctx)
    if after is not None:
        name, ident = after
        query = query.where(
            (col(McpConfiguration.name) > name)
            | ((col(McpConfiguration.name) == name) & (col(McpConfiguration.id) > ident))
        )
    query = query.order_by(col(McpConfiguration.name), col(McpConfiguration.id)).limit(limit + 1)
    async with tenant_transaction(backends.engine, ctx) as db:
        rows = list(await db.exec(query))
        grants = await connections(db, ctx, [r.id for r in rows[:limit] if r.auth_type == "oauth"])
    return rows, grants


async def get_config(
    backends: Backends, ctx: TenantContext, config_id: UUID
) -> tuple[McpConfiguration, dict[UUID, str]]:
    """One configuration with the caller's OAuth connection to it."""
    row = await find_config(backends, ctx, config_id)
    async with tenant_transaction(backends.engine, ctx) as db:
        return row, await connections(db, ctx, [row.id])


async def _validate(spec: ConfigSpec, settings: Settings) -> None:
    try:
        if spec.transport == "stdio":
            assert spec.command is not None
            check_stdio(spec.command, spec.args, spec.env, settings)
        else:
            assert spec.endpoint_url is not None
            await check_endpoint(spec.endpoint_url, settings)
        if spec.oauth.get("authorization_server"):
            await check_endpoint(spec.oauth["authorization_server"], settings, "oauth.authorization_server")
    except EgressRefused as exc:
        raise Invalid(str(exc), [(exc.field, exc.reason)]) from exc
    if spec.secret is not None:
        key_ring(settings)


def _seal(settings: Settings, row: McpConfiguration, secret: str) -> str:
    return key_ring(settings).encrypt(
        secret, SecretRef("mcp_configurations", "encrypted_secret", row.id, row.org_id)
    )


def _duplicate(name: str) -> Conflict:
    return Conflict(f"an MCP configuration named {name!r} already exists in this scope")


def _may_change(ctx: TenantContext, row: McpConfiguration) -> None:
    if row.scope == "organization" and ctx.role not in ADMIN_ROLES:
        raise Forbidden("only organization admins change organization MCP configurations")


async def _may_run_command(backends: Backends, ctx: TenantContext, spec: ConfigSpec) -> None:
    """A stdio server runs a command on the tools worker: members add one only where an admin lets
    them (tenant setting ``members_may_add_stdio``)."""
    if spec.transport != "stdio" or ctx.role in ADMIN_ROLES:
        return
    if not await members_may_add_stdio(backends, ctx):
        raise Forbidden(
            "members may not add stdio MCP servers in this organization:"
            f" an admin can allow it with the tenant setting {MEMBERS_STDIO_KEY}"
        )


async def create_config(backends: Backends, ctx: TenantContext, spec: ConfigSpec) -> McpConfiguration:
    if spec.scope == "organization" and ctx.role not in ADMIN_ROLES:
        raise Forbidden("only organization admins add organization MCP configurations")
    await _validate(spec, backends.settings)
    await _may_run_command(backends, ctx, spec)
    assert ctx.org_id is not None
    row = McpConfiguration(
        id=uuid4(),
        org_id=ctx.org_id,
        user_id=ctx.user_id if spec.scope == "user" else None,
        scope=spec.scope,
        name=spec.name,
        transport=spec.transport,
        auth_type=spec.auth_type,
        endpoint_url=spec.endpoint_url,
        command=spec.command,
        args=spec.args,
        env=spec.env,
        oauth=spec.oauth,
        enabled=spec.enabled,
    )
    if spec.secret is not None:
        row.encrypted_secret = _seal(backends.settings, row, spec.secret)
    try:
        async with tenant_transaction(backends.engine, ctx) as db:
            db.add(row)
    except IntegrityError as exc:
        raise _duplicate(spec.name) from exc
    return row


async def replace_config(
    backends: Backends, ctx: TenantContext, config_id: UUID, spec: ConfigSpec
) -> McpConfiguration:
    """Without a new bearer token the stored one is kept, unless it would go to another host."""
    row = await find_config(backends, ctx, config_id)
    _may_change(ctx, row)
    if spec.scope != row.scope:
        raise Invalid.field(
            "scope", f"is {row.scope}", detail="scope cannot change; create a new configuration instead"
        )
    await _validate(spec, backends.settings)
    await _may_run_command(backends, ctx, spec)
    keeps_token = spec.auth_type == "bearer" and spec.secret is None
    if keeps_token and (row.encrypted_secret is None or row.auth_type != "bearer"):
        raise Invalid.field(
            "bearer_token", "required for auth_type bearer", detail="bearer_token is required"
        )
    if keeps_token and spec.endpoint_url != row.endpoint_url:
        # The stored token was given for the old host; keeping it would send it to the new one.
        raise Invalid.field(
            "bearer_token",
            "required when endpoint_url changes",
            detail="bearer_token is required when endpoint_url changes: the stored token is not sent elsewhere",
        )
    previous_auth = row.auth_type
    for name in (
        "name",
        "transport",
        "endpoint_url",
        "command",
        "args",
        "env",
        "auth_type",
        "enabled",
        "oauth",
    ):
        setattr(row, name, getattr(spec, name))
    if spec.secret is not None:
        row.encrypted_secret = _seal(backends.settings, row, spec.secret)
    elif (
        spec.auth_type != previous_auth
        or spec.auth_type == "none"
        or (spec.auth_type == "oauth" and not spec.oauth.get("client_id"))
    ):
        row.encrypted_secret = None
    row.updated_at = utcnow()
    try:
        async with tenant_transaction(backends.engine, ctx) as db:
            await db.merge(row)
    except IntegrityError as exc:
        raise _duplicate(spec.name) from exc
    await announce_change(backends.redis, backends.names, row.id, backends.names.mcp_tools(row.id))
    return row


async def remove_config(backends: Backends, ctx: TenantContext, config_id: UUID) -> None:
    """Deletes a configuration with its stored secret and tokens; OAuth grants (everyone's, for an
    organization's server) are revoked at the authorization server first."""
    row = await find_config(backends, ctx, config_id)
    _may_change(ctx, row)
    async with tenant_transaction(backends.engine, ctx) as db:
        grants = list(await db.exec(select(McpOAuthToken).where(McpOAuthToken.configuration_id == row.id)))
    if grants:
        await revoke_grants(key_ring(backends.settings), grants, backends.settings)
    async with tenant_transaction(backends.engine, ctx) as db:
        stored = await db.get(McpConfiguration, row.id)
        if stored is not None:
            await db.delete(stored)
    await announce_change(
        backends.redis,
        backends.names,
        row.id,
        backends.names.mcp_tools(row.id),
        backends.names.breaker(row.id),
    )
