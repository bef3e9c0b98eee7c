"""Connecting a user to an MCP server that wants OAuth: starting an authorization, completing it
from the authorization server's callback, and disconnecting.

The platform holds the tokens: sealed in ``mcp_oauth_tokens``, used only by ``tools`` workers,
refreshed by the ``default`` pool. Every refused callback is audited with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from authlib.common.security import generate_token
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from events.audit import audit_event
from events.publisher import publish
from schemas.crypto import KeyRing, SecretRef
from schemas.db import TenantContext, tenant_transaction
from schemas.settings import Settings
from schemas.tables import McpConfiguration, McpOAuthToken
from services.context import Backends
from services.errors import Conflict, DomainError, Invalid
from services.mcp.changes import announce_change
from services.mcp.configs import find_config, key_ring
from services.mcp.oauth_client import (
    ClientInfo,
    GrantRejected,
    OAuthFlowError,
    authorization_url,
    discover,
    exchange_code,
    http_client,
    register,
)
from services.mcp.oauth_grants import CLIENT_SECRET, refresh_request, revoke_grants, seal, store_tokens
from services.mcp.oauth_state import PendingAuthorization, StateOwner, StateRefused, consume, issue, owner_of

log = logging.getLogger(__name__)

# A registered client's secret waits sealed in the pending authorization, under this identity.
PENDING_TABLE = "oauth_pending"


class UpstreamFailed(DomainError):
    """The MCP server's authorization server could not be used to start an authorization."""

    status = 502


class CallbackRefused(DomainError):
    """A callback that stores no grant; ``reason`` is a short slug (``state-expired``, ``denied``…)."""

    def __init__(self, detail: str, reason: str, status: int = 400) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Origin:
    """Where a callback came from, for its audit row."""

    ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class Caller:
    """The authenticated user of a POSTed callback, who must be the one who started it."""

    org_id: UUID | None
    user_id: UUID


def frontend_page(field: str, given: str, settings: Settings) -> str:
    if any(given.startswith(prefix) for prefix in settings.mcp_oauth_redirect_allowlist):
        return given
    raise Invalid(
        f"{field} is not allowed",
        [(field, "must start with an entry of AGENTAPI_MCP_OAUTH_REDIRECT_ALLOWLIST")],
    )


def _redirect_uri(given: str | None, settings: Settings) -> str:
    callback = settings.oauth_callback_url()
    if given is None or given == callback:
        return callback
    return frontend_page("redirect_uri", given, settings)


def _scope(config: McpConfiguration, advertised: tuple[str, ...]) -> str | None:
    wanted = config.oauth.get("scopes") or list(advertised)
    return " ".join(wanted) or None


def _configured_secret(ring: KeyRing, config: McpConfiguration) -> str | None:
    if not config.encrypted_secret:
        return None
    return ring.decrypt(
        config.encrypted_secret, SecretRef("mcp_configurations", "encrypted_secret", config.id, config.org_id)
    )


def _upstream_detail(config: McpConfiguration, exc: OAuthFlowError) -> str:
    return f"authorizing {config.name} failed at its server: {exc.reason}"


async def start_authorization(
    backends: Backends,
    ctx: TenantContext,
    config_id: UUID,
    redirect_uri: str | None,
    return_to: str | None,
) -> str:
    """The authorization URL to open: discovers the authorization server (RFC 9728, RFC 8414),
    registers a client (RFC 7591) unless one is configured; authorization code with PKCE S256,
    under a single-use state that expires."""
    settings = backends.settings
    config = await find_config(backends, ctx, config_id)
    if config.auth_type != "oauth" or not config.endpoint_url:
        raise Conflict(f"{config.name} does not use OAuth (auth_type is {config.auth_type})")
    if not config.enabled:
        raise Conflict(f"{config.name} is disabled")
    redirect_uri = _redirect_uri(redirect_uri, settings)
    return_to = frontend_page("return_to", return_to, settings) if return_to else None
    ring = key_ring(settings)
    try:
        async with http_client(settings) as http:
            resource, server, advertised = await discover(http, config.endpoint_url, config.oauth)
            scope = _scope(config, advertised)
            if config.oauth.get("client_id"):
                secret = _configured_secret(ring, config)
                client_id = str(config.oauth["client_id"])
                method = config.oauth.get("token_endpoint_auth_method") or (
                    "client_secret_basic" if secret else "none"
                )
            elif server.registration_endpoint:
                client_id, secret, method = await register(http, server, redirect_uri, scope)
            else:
                raise Conflict(
                    f"the authorization server of {config.name} offers no dynamic client registration;"
                    " set oauth.client_id (and oauth.client_secret) on the configuration"
                )
    except OAuthFlowError as exc:
        raise UpstreamFailed(_upstream_detail(config, exc)) from exc
    client = ClientInfo(
        issuer=server.issuer,
        authorization_endpoint=server.authorization_endpoint,
        token_endpoint=server.token_endpoint,
        revocation_endpoint=server.revocation_endpoint,
        client_id=client_id,
        token_endpoint_auth_method=method,
        resource=resource,
        scope=scope,
    )
    pending_id = uuid4()
    code_verifier = generate_token(64)
    pending = PendingAuthorization(
        org_id=str(ctx.org_id),
        user_id=str(ctx.user_id),
        config_id=str(config.id),
        redirect_uri=redirect_uri,
        code_verifier=code_verifier,
        client=client.as_json(),
        pending_id=str(pending_id),
        sealed_client_secret=(
            ring.encrypt(secret, SecretRef(PENDING_TABLE, CLIENT_SECRET, pending_id, ctx.org_id))
            if secret
            else None
        ),
        return_to=return_to,
    )
    oauth_state = await issue(backends.redis, backends.names, pending, settings.mcp_oauth_state_ttl_seconds)
    return authorization_url(client, redirect_uri, oauth_state, code_verifier)


async def _audit(
    backends: Backends,
    origin: Origin,
    owner: StateOwner,
    correlation_id: str,
    *,
    outcome: str,
    reason: str,
    detail: str,
    actor: UUID | None = None,
) -> None:
    await publish(
        backends.redis,
        backends.names,
        audit_event(
            org_id=owner.org_id,
            actor_user_id=actor or owner.user_id,
            action="mcp.oauth.callback",
            outcome=outcome,
            resource_type="mcp_configuration",
            resource_id=str(owner.config_id),
            details={"reason": reason, "detail": detail, "state_user_id": str(owner.user_id)},
            ip=origin.ip,
            user_agent=origin.user_agent,
            correlation_id=correlation_id,
        ),
    )


async def _store(
    backends: Backends,
    ctx: TenantContext,
    config: McpConfiguration,
    client: ClientInfo,
    secret: str | None,
    token: dict[str, Any],
) -> McpOAuthToken:
    """The user's grant for this configuration, replaced by the new tokens; the tokens it replaces
    are revoked, so a reconnect leaves no older grant alive at the server."""
    ring = key_ring(backends.settings)
    replaced: McpOAuthToken | None = None
    async with tenant_transaction(backends.engine, ctx) as db:
        row = (
            await db.exec(
                select(McpOAuthToken).where(
                    McpOAuthToken.configuration_id == config.id, McpOAuthToken.user_id == ctx.user_id
                )
            )
        ).first()
        if row is None:
            assert ctx.org_id is not None and ctx.user_id is not None
            row = McpOAuthToken(
                id=uuid4(),
                org_id=ctx.org_id,
                user_id=ctx.user_id,
                configuration_id=config.id,
                encrypted_access_token="",
            )
        else:
            replaced = McpOAuthToken.model_validate(row.model_dump())
        row.client = client.as_json()
        row.encrypted_client_secret = seal(ring, row, CLIENT_SECRET, secret) if secret else None
        row.encrypted_refresh_token = None
        row.scopes = None
        store_tokens(ring, row, token)
        db.add(row)
    await announce_change(backends.redis, backends.names, config.id)
    if replaced is not None and replaced.encrypted_access_token:
        await revoke_grants(ring, [replaced], backends.settings)
    return row


async def complete_authorization(
    backends: Backends,
    origin: Origin,
    correlation_id: str,
    oauth_state: str,
    code: str | None,
    caller: Caller | None,
    error: str | None = None,
) -> tuple[McpConfiguration, McpOAuthToken, PendingAuthorization]:
    """Checks the state, exchanges the code and stores the grant; CallbackRefused (audited under the
    state's organization, or logged for a state never issued) otherwise."""

    async def refuse(
        owner: StateOwner | None, reason: str, detail: str, *, status: int = 400, actor: UUID | None = None
    ) -> CallbackRefused:
        if owner is not None:
            await _audit(
                backends,
                origin,
                owner,
                correlation_id,
                outcome="failure",
                reason=reason,
                detail=detail,
                actor=actor,
            )
        else:
            log.warning("refused OAuth callback from %s: %s", origin.ip, detail)
        return CallbackRefused(detail, reason, status)

    try:
        pending = await consume(backends.redis, backends.names, oauth_state)
    except StateRefused as exc:
        actor = caller.user_id if caller is not None else None
        raise await refuse(exc.owner, f"state-{exc.code}", exc.detail, actor=actor) from exc
    owner = owner_of(pending)
    if caller is not None and (caller.user_id != owner.user_id or caller.org_id != owner.org_id):
        raise await refuse(
            owner,
            "state-other-user",
            "state of another user: this authorization was started by someone else",
            actor=caller.user_id,
        )
    if error:
        raise await refuse(owner, "denied", f"the authorization server reported: {error}")
    if not code:
        raise await refuse(owner, "no-code", "the callback carries no code")
    ctx = TenantContext(org_id=owner.org_id, user_id=owner.user_id, role="member")
    config = await find_config(backends, ctx, owner.config_id)
    ring = key_ring(backends.settings)
    client = ClientInfo.from_json(pending.client)
    secret = (
        ring.decrypt(
            pending.sealed_client_secret,
            SecretRef(PENDING_TABLE, CLIENT_SECRET, UUID(pending.pending_id), owner.org_id),
        )
        if pending.sealed_client_secret
        else None
    )
    try:
        token = await exchange_code(
            client, secret, pending.redirect_uri, code, pending.code_verifier, backends.settings
        )
    except GrantRejected as exc:
        raise await refuse(owner, "code-rejected", exc.reason) from exc
    except OAuthFlowError as exc:
        raise await refuse(owner, "upstream", _upstream_detail(config, exc), status=502) from exc
    if not token.get("access_token"):
        raise await refuse(owner, "upstream", "the token endpoint answered no access_token", status=502)
    try:
        grant = await _store(backends, ctx, config, client, secret, token)
    except IntegrityError as exc:
        raise Conflict("another authorization of this server completed at the same time") from exc
    follow_up = refresh_request(grant, backends.settings, correlation_id)
    if follow_up is not None:
        await publish(backends.redis, backends.names, follow_up)
    await _audit(
        backends,
        origin,
        owner,
        correlation_id,
        outcome="success",
        reason="connected",
        detail=f"{config.name} connected",
    )
    return config, grant, pending


async def disconnect(
    backends: Backends, ctx: TenantContext, config_id: UUID
) -> tuple[McpConfiguration, bool | None]:
    """Revokes the caller's tokens for this server at its authorization server (RFC 7009) and
    deletes them; whether the server confirmed (None: there were none)."""
    config = await find_config(backends, ctx, config_id)
    async with tenant_transaction(backends.engine, ctx) as db:
        grants = list(
            await db.exec(
                select(McpOAuthToken).where(
                    McpOAuthToken.configuration_id == config.id, McpOAuthToken.user_id == ctx.user_id
                )
            )
        )
    revoked = await revoke_grants(key_ring(backends.settings), grants, backends.settings) if grants else None
    async with tenant_transaction(backends.engine, ctx) as db:
        for grant in grants:
            stored = await db.get(McpOAuthToken, grant.id)
            if stored is not None:
                await db.delete(stored)
    await announce_change(backends.redis, backends.names, config.id)
    return config, revoked
