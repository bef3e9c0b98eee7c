"""Connecting a user to an MCP server that wants OAuth: init, the authorization server's callback
(a browser redirect, so without a JWT: the single-use ``state`` says whose it is; or the seed's
POST variant from a frontend page, with a JWT that must match), and disconnect.

The platform holds the tokens: sealed in ``mcp_oauth_tokens``, used only by ``tools`` workers,
refreshed by the ``default`` pool. Every refused callback is audited with its reason.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from uuid import UUID, uuid4

from authlib.common.security import generate_token
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.exceptions import ClientException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Redirect, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from api.auth import Principal
from api.correlation import current_correlation_id
from api.oauth_state import (
    PendingAuthorization,
    StateOwner,
    StateRefused,
    consume,
    issue,
    owner_of,
)
from api.problems import StrictBody, problem_response, problem_responses, problem_type
from api.routes.mcp import find_config
from api.state import Resources, resources
from api.tenancy import tenant_context
from events.audit import audit_event
from events.publisher import publish
from schemas.crypto import KeyRing, KeyRingError, SecretRef
from schemas.db import TenantContext, tenant_transaction
from schemas.settings import OAUTH_CALLBACK_PATH, Settings
from schemas.tables import McpConfiguration, McpOAuthToken
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

log = logging.getLogger(__name__)

# A registered client's secret waits sealed in the pending authorization, under this identity.
PENDING_TABLE = "oauth_pending"


class InitRequest(StrictBody):
    mcp_configuration_id: UUID
    redirect_uri: str | None = Field(
        None,
        max_length=2048,
        description="where the authorization server sends the browser back: the platform's callback"
        " (default) or a frontend page on AGENTAPI_MCP_OAUTH_REDIRECT_ALLOWLIST, which then POSTs"
        " the code and state to the callback",
    )

    return_to: str | None = Field(
        None,
        max_length=2048,
        description="a frontend page (on AGENTAPI_MCP_OAUTH_REDIRECT_ALLOWLIST) the callback redirects"
        " to once connected, with `mcp_oauth=connected&config_id=…`; without it the callback answers"
        " the popup page",
    )


class InitOut(BaseModel):
    authorization_url: str
    expires_in: int = Field(description="seconds the authorization may take")


class CallbackIn(StrictBody):
    code: str = Field(min_length=1, max_length=4096)
    state: str = Field(min_length=1, max_length=512)


class ConnectionOut(BaseModel):
    config_id: UUID
    connection: Literal["connected", "needs_reauth", "not_connected"]
    scopes: str | None = None
    expires_at: datetime | None = None
    revoked: bool | None = Field(None, description="disconnect: whether the authorization server confirmed")


def _key_ring(settings: Settings) -> KeyRing:
    try:
        return settings.key_ring()
    except KeyRingError as exc:
        raise ClientException(str(exc), status_code=503) from exc


def _frontend_page(field: str, given: str, settings: Settings) -> str:
    if any(given.startswith(prefix) for prefix in settings.mcp_oauth_redirect_allowlist):
        return given
    raise ValidationException(
        f"{field} is not allowed",
        extra=[
            {"key": field, "message": "must start with an entry of AGENTAPI_MCP_OAUTH_REDIRECT_ALLOWLIST"}
        ],
    )


def _redirect_uri(given: str | None, settings: Settings) -> str:
    callback = settings.oauth_callback_url()
    if given is None or given == callback:
        return callback
    return _frontend_page("redirect_uri", given, settings)


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


@post(
    "/api/v1/mcp/oauth/init",
    tags=["mcp"],
    status_code=200,
    responses={
        200: ResponseSpec(data_container=InitOut, description="open it in a popup"),
        **problem_responses(502),
    },
)
async def oauth_init(
    data: InitRequest, request: Request[Principal, str, State], state: State
) -> Response[Any]:
    """Start connecting an `auth_type: oauth` server: discovers its authorization server (RFC 9728,
    RFC 8414), registers a client (RFC 7591) unless one is configured, and answers the URL to open
    (authorization code with PKCE S256; the state is single-use and expires)."""
    res = resources(state)
    ctx = tenant_context(request.user)
    config = await find_config(res, ctx, data.mcp_configuration_id)
    if config.auth_type != "oauth" or not config.endpoint_url:
        raise ClientException(
            f"{config.name} does not use OAuth (auth_type is {config.auth_type})", status_code=409
        )
    if not config.enabled:
        raise ClientException(f"{config.name} is disabled", status_code=409)
    redirect_uri = _redirect_uri(data.redirect_uri, res.settings)
    return_to = _frontend_page("return_to", data.return_to, res.settings) if data.return_to else None
    ring = _key_ring(res.settings)
    try:
        async with http_client() as http:
            resource, server, advertised = await discover(
                http, config.endpoint_url, config.oauth, res.settings
            )
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
                raise ClientException(
                    f"the authorization server of {config.name} offers no dynamic client registration;"
                    " set oauth.client_id (and oauth.client_secret) on the configuration",
                    status_code=409,
                )
    except OAuthFlowError as exc:
        return problem_response(502, _upstream_detail(config, exc), type_=problem_type("oauth-upstream"))
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
    ttl = res.settings.mcp_oauth_state_ttl_seconds
    oauth_state = await issue(res.redis, res.names, pending, ttl)
    url = authorization_url(client, redirect_uri, oauth_state, code_verifier)
    return Response(InitOut(authorization_url=url, expires_in=ttl), status_code=200)


async def _audit(
    res: Resources,
    request: Request[Any, Any, State],
    owner: StateOwner,
    *,
    outcome: str,
    reason: str,
    detail: str,
    actor: UUID | None = None,
) -> None:
    client = request.client
    await publish(
        res.redis,
        res.names,
        audit_event(
            org_id=owner.org_id,
            actor_user_id=actor or owner.user_id,
            action="mcp.oauth.callback",
            outcome=outcome,
            resource_type="mcp_configuration",
            resource_id=str(owner.config_id),
            details={"reason": reason, "detail": detail, "state_user_id": str(owner.user_id)},
            ip=client.host if client else None,
            user_agent=request.headers.get("user-agent"),
            correlation_id=current_correlation_id(),
        ),
    )


class CallbackRefused(Exception):
    def __init__(self, response: Response[Any]) -> None:
        self.response = response


async def _refuse(
    res: Resources,
    request: Request[Any, Any, State],
    owner: StateOwner | None,
    reason: str,
    detail: str,
    *,
    status: int = 400,
    actor: UUID | None = None,
) -> CallbackRefused:
    if owner is not None:
        await _audit(res, request, owner, outcome="failure", reason=reason, detail=detail, actor=actor)
    else:
        log.warning(
            "refused OAuth callback from %s: %s", request.client.host if request.client else None, detail
        )
    return CallbackRefused(
        problem_response(status, detail, type_=problem_type(f"oauth-{reason}"), reason=reason)
    )


async def _store(
    res: Resources,
    ctx: TenantContext,
    config: McpConfiguration,
    client: ClientInfo,
    secret: str | None,
    token: dict[str, Any],
) -> McpOAuthToken:
    """The user's grant for this configuration, replaced by the new tokens; the tokens it replaces
    are revoked, so a reconnect leaves no older grant alive at the server."""
    ring = _key_ring(res.settings)
    replaced: McpOAuthToken | None = None
    async with tenant_transaction(res.engine, ctx) as db:
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
    if replaced is not None and replaced.encrypted_access_token:
        await revoke_grants(ring, [replaced], res.settings)
    return row


async def _complete(
    res: Resources,
    request: Request[Any, Any, State],
    oauth_state: str,
    code: str | None,
    caller: Principal | None,
    error: str | None = None,
) -> tuple[McpConfiguration, McpOAuthToken, PendingAuthorization]:
    """Checks the state, exchanges the code and stores the grant; CallbackRefused otherwise."""
    try:
        pending = await consume(res.redis, res.names, oauth_state)
    except StateRefused as exc:
        actor = caller.user_id if caller is not None else None
        raise await _refuse(res, request, exc.owner, f"state-{exc.code}", exc.detail, actor=actor) from exc
    owner = owner_of(pending)
    if caller is not None and (caller.user_id != owner.user_id or caller.org_id != owner.org_id):
        raise await _refuse(
            res,
            request,
            owner,
            "state-other-user",
            "state of another user: this authorization was started by someone else",
            actor=caller.user_id,
        )
    if error:
        raise await _refuse(res, request, owner, "denied", f"the authorization server reported: {error}")
    if not code:
        raise await _refuse(res, request, owner, "no-code", "the callback carries no code")
    ctx = TenantContext(org_id=owner.org_id, user_id=owner.user_id, role="member")
    config = await find_config(res, ctx, owner.config_id)
    ring = _key_ring(res.settings)
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
            client, secret, pending.redirect_uri, code, pending.code_verifier, res.settings
        )
    except GrantRejected as exc:
        raise await _refuse(res, request, owner, "code-rejected", exc.reason) from exc
    except OAuthFlowError as exc:
        raise await _refuse(
            res, request, owner, "upstream", _upstream_detail(config, exc), status=502
        ) from exc
    if not token.get("access_token"):
        raise await _refuse(
            res, request, owner, "upstream", "the token endpoint answered no access_token", status=502
        )
    try:
        grant = await _store(res, ctx, config, client, secret, token)
    except IntegrityError as exc:
        raise ClientException(
            "another authorization of this server completed at the same time", status_code=409
        ) from exc
    follow_up = refresh_request(grant, res.settings, current_correlation_id())
    if follow_up is not None:
        await publish(res.redis, res.names, follow_up)
    await _audit(
        res, request, owner, outcome="success", reason="connected", detail=f"{config.name} connected"
    )
    return config, grant, pending


def _success_page(config: McpConfiguration) -> str:
    message = json.dumps({"type": "oauth_success", "config_id": str(config.id)})
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Connected</title></head><body>"
        f"<p>{html.escape(config.name)} is connected. You can close this window.</p>"
        # The message names the configuration only, so any opener may read it.
        f"<script>if (window.opener) {{ window.opener.postMessage({message}, '*'); window.close(); }}</script>"
        "</body></html>"
    )


@get(
    OAUTH_CALLBACK_PATH,
    tags=["mcp"],
    exclude_from_auth=True,
    security=[{}],
    media_type="text/html",
    responses=problem_responses(400, 502),
)
async def oauth_callback(
    request: Request[Any, Any, State],
    state: State,
    oauth_state: Annotated[str | None, Parameter(query="state", max_length=512)] = None,
    code: Annotated[str | None, Parameter(max_length=4096)] = None,
    error: Annotated[str | None, Parameter(max_length=200)] = None,
    error_description: Annotated[str | None, Parameter(max_length=500)] = None,
) -> Response[Any]:
    """Where the authorization server sends the user's browser: stores the grant and answers a page
    that posts `{type: 'oauth_success'}` to the window that opened it. No JWT: the state binds the user."""
    res = resources(state)
    if not oauth_state:
        return problem_response(
            400,
            "the callback carries no state",
            type_=problem_type("oauth-state-missing"),
            reason="state-missing",
        )
    reported = f"{error} ({error_description})" if error and error_description else error
    try:
        config, _, pending = await _complete(res, request, oauth_state, code, None, error=reported)
    except CallbackRefused as refused:
        return refused.response
    if pending.return_to:
        separator = "&" if "?" in pending.return_to else "?"
        target = f"{pending.return_to}{separator}{urlencode({'mcp_oauth': 'connected', 'config_id': str(config.id)})}"
        return Redirect(
            target, status_code=303, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        )
    return Response(
        _success_page(config),
        media_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@post(OAUTH_CALLBACK_PATH, tags=["mcp"], status_code=200, responses=problem_responses(400, 502))
async def oauth_callback_post(
    data: CallbackIn, request: Request[Principal, str, State], state: State
) -> Response[Any]:
    """The seed's variant: a frontend page that received the code POSTs it with the state. The
    caller must be the user who started the authorization."""
    res = resources(state)
    tenant_context(request.user)
    try:
        config, grant, _ = await _complete(res, request, data.state, data.code, request.user)
    except CallbackRefused as refused:
        return refused.response
    return Response(
        ConnectionOut(
            config_id=config.id, connection="connected", scopes=grant.scopes, expires_at=grant.expires_at
        )
    )


@post("/api/v1/mcp/configurations/{config_id:uuid}/disconnect", tags=["mcp"], status_code=200)
async def oauth_disconnect(
    config_id: UUID, request: Request[Principal, str, State], state: State
) -> ConnectionOut:
    """Revoke your tokens for this server at its authorization server (RFC 7009) and delete them."""
    res = resources(state)
    ctx = tenant_context(request.user)
    config = await find_config(res, ctx, config_id)
    async with tenant_transaction(res.engine, ctx) as db:
        grants = list(
            await db.exec(
                select(McpOAuthToken).where(
                    McpOAuthToken.configuration_id == config.id, McpOAuthToken.user_id == ctx.user_id
                )
            )
        )
    revoked = await revoke_grants(_key_ring(res.settings), grants, res.settings) if grants else None
    async with tenant_transaction(res.engine, ctx) as db:
        for grant in grants:
            stored = await db.get(McpOAuthToken, grant.id)
            if stored is not None:
                await db.delete(stored)
    return ConnectionOut(config_id=config.id, connection="not_connected", revoked=revoked)
