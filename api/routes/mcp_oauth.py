"""Connecting a user to an MCP server that wants OAuth (``services.mcp.connect``): init, the
authorization server's callback (a browser redirect, so without a JWT: the single-use ``state`` says
whose it is; or the seed's POST variant from a frontend page, with a JWT that must match), and
disconnect.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from uuid import UUID

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Redirect, Response
from pydantic import BaseModel, Field

from api.auth import Principal
from api.problems import StrictBody, problem_response, problem_responses, problem_type
from api.state import resources
from api.tenancy import tenant_context
from schemas.settings import OAUTH_CALLBACK_PATH
from schemas.tables import McpConfiguration
from services.context import current_correlation_id
from services.mcp.connect import (
    CallbackRefused,
    Caller,
    Origin,
    UpstreamFailed,
    complete_authorization,
    disconnect,
    start_authorization,
)


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
    try:
        url = await start_authorization(
            res, ctx, data.mcp_configuration_id, data.redirect_uri, data.return_to
        )
    except UpstreamFailed as exc:
        return problem_response(502, exc.detail, type_=problem_type("oauth-upstream"))
    return Response(
        InitOut(authorization_url=url, expires_in=res.settings.mcp_oauth_state_ttl_seconds), status_code=200
    )


def _origin(request: Request[Any, Any, State]) -> Origin:
    return Origin(request.client.host if request.client else None, request.headers.get("user-agent"))


def _refused(exc: CallbackRefused) -> Response[Any]:
    return problem_response(
        exc.status, exc.detail, type_=problem_type(f"oauth-{exc.reason}"), reason=exc.reason
    )


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
        config, _, pending = await complete_authorization(
            res, _origin(request), current_correlation_id(), oauth_state, code, None, error=reported
        )
    except CallbackRefused as exc:
        return _refused(exc)
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
    tenant_context(request.user)
    caller = Caller(request.user.org_id, request.user.user_id)
    try:
        config, grant, _ = await complete_authorization(
            resources(state), _origin(request), current_correlation_id(), data.state, data.code, caller
        )
    except CallbackRefused as exc:
        return _refused(exc)
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
    config, revoked = await disconnect(resources(state), tenant_context(request.user), config_id)
    return ConnectionOut(config_id=config.id, connection="not_connected", revoked=revoked)
