"""The OAuth 2.1 client side of MCP connections, on authlib's httpx client.

Discovery follows the MCP authorization spec: the MCP server's protected-resource metadata
(RFC 9728, found through its 401 challenge or the well-known path) names the authorization server,
whose metadata (RFC 8414, or OpenID discovery) gives the endpoints. Clients are registered
dynamically (RFC 7591) when the server offers it and no client is configured. Every URL a server
hands us passes the same egress check as MCP endpoints before we connect, connections go to the
addresses that check vetted (``services/pinned_network.py``: a name cannot answer a public address
to the check and an internal one to the connection), and redirects are not followed, so a metadata
document cannot point the platform at an internal address.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.client import OAuth2Client

from schemas.settings import Settings
from services.egress import EgressRefused, Resolver, resolve
from services.pinned_network import VettedClient, VettedTransport

HTTP_TIMEOUT_SECONDS = 15.0
MAX_METADATA_BYTES = 256 * 1024
RESOURCE_METADATA = re.compile(r'resource_metadata="([^"]+)"')


class OAuthFlowError(Exception):
    """A step of the flow failed for a reason the user or admin can act on."""

    def __init__(self, reason: str, *, status: int = 502) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class GrantRejected(OAuthFlowError):
    """The authorization server refused a code or refresh token (``invalid_grant`` and kin): only a
    new authorization helps."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, status=400)


@dataclass(frozen=True)
class ClientInfo:
    """The client a grant belongs to and where its authorization server lives (no secrets)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str | None
    client_id: str
    token_endpoint_auth_method: str
    resource: str
    scope: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientInfo:
        values: dict[str, Any] = {name: data.get(name) for name in cls.__dataclass_fields__}
        return cls(**values)


@dataclass(frozen=True)
class AuthServer:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None
    revocation_endpoint: str | None
    scopes_supported: tuple[str, ...]


def http_client(settings: Settings, resolver: Resolver = resolve) -> VettedClient:
    """The client of one discovery and registration: each origin checked once, then pinned."""
    return VettedClient(settings, resolver, HTTP_TIMEOUT_SECONDS)


async def _checked(url: Any, vetting: VettedTransport, what: str) -> str:
    if not isinstance(url, str):
        raise OAuthFlowError(f"the {what} is missing from the server's metadata")
    try:
        await vetting.vet(url, what)
    except EgressRefused as exc:
        raise OAuthFlowError(f"the {what} {url} is refused: {exc.reason}") from exc
    return url


async def _get_json(http: VettedClient, url: str, what: str) -> dict[str, Any] | None:
    """The JSON document at ``url``, or None when there is none (404 and the like)."""
    await _checked(url, http.vetting, what)
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx2.HTTPError as exc:
        raise OAuthFlowError(f"cannot reach {url}: {exc.__class__.__name__}") from exc
    if response.status_code != 200 or len(response.content) > MAX_METADATA_BYTES:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _well_known(url: str, suffix: str, *, inserted: bool = True) -> str:
    """RFC 8414 §3 / RFC 9728 §3: the well-known segment goes between the host and the path."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    full = f"/.well-known/{suffix}{path}" if inserted else f"{path}/.well-known/{suffix}"
    return urlunsplit((parts.scheme, parts.netloc, full, "", ""))


async def _protected_resource(http: VettedClient, endpoint: str) -> dict[str, Any]:
    candidates: list[str] = []
    await _checked(endpoint, http.vetting, "MCP endpoint")
    try:
        challenge = await http.get(endpoint, headers={"Accept": "application/json, text/event-stream"})
    except httpx2.HTTPError as exc:
        raise OAuthFlowError(f"cannot reach the MCP server: {exc.__class__.__name__}") from exc
    found = RESOURCE_METADATA.search(challenge.headers.get("www-authenticate", ""))
    if found:
        candidates.append(found.group(1))
    candidates.append(_well_known(endpoint, "oauth-protected-resource"))
    root = urlunsplit((*urlsplit(endpoint)[:2], "", "", ""))
    candidates.append(_well_known(root, "oauth-protected-resource"))
    for url in dict.fromkeys(candidates):
        document = await _get_json(http, url, "protected resource metadata URL")
        if document and document.get("authorization_servers"):
            return document
    raise OAuthFlowError(
        "the MCP server publishes no protected-resource metadata (RFC 9728) naming an authorization"
        " server; set oauth.authorization_server on the configuration"
    )


async def _authorization_server(http: VettedClient, issuer: str) -> AuthServer:
    for url in dict.fromkeys(
        [
            _well_known(issuer, "oauth-authorization-server"),
            _well_known(issuer, "openid-configuration"),
            _well_known(issuer, "openid-configuration", inserted=False),
        ]
    ):
        meta = await _get_json(http, url, "authorization server metadata URL")
        if meta is None:
            continue
        if str(meta.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
            raise OAuthFlowError(f"the metadata at {url} names another issuer ({meta.get('issuer')!r})")
        if "S256" not in (meta.get("code_challenge_methods_supported") or []):
            raise OAuthFlowError("the authorization server does not support PKCE with S256")
        return AuthServer(
            issuer=issuer,
            authorization_endpoint=await _checked(
                meta.get("authorization_endpoint"), http.vetting, "authorization endpoint"
            ),
            token_endpoint=await _checked(meta.get("token_endpoint"), http.vetting, "token endpoint"),
            registration_endpoint=(
                await _checked(meta["registration_endpoint"], http.vetting, "registration endpoint")
                if meta.get("registration_endpoint")
                else None
            ),
            revocation_endpoint=(
                await _checked(meta["revocation_endpoint"], http.vetting, "revocation endpoint")
                if meta.get("revocation_endpoint")
                else None
            ),
            scopes_supported=tuple(str(s) for s in meta.get("scopes_supported") or ()),
        )
    raise OAuthFlowError(f"no authorization server metadata (RFC 8414) found for {issuer}")


async def discover(
    http: VettedClient, endpoint: str, oauth: dict[str, Any]
) -> tuple[str, AuthServer, tuple[str, ...]]:
    """(resource, authorization server, scopes the resource advertises) for an MCP endpoint."""
    resource, scopes = endpoint, tuple[str, ...]()
    issuer = oauth.get("authorization_server")
    if not issuer:
        document = await _protected_resource(http, endpoint)
        issuer = str(document["authorization_servers"][0])
        resource = str(document.get("resource") or endpoint)
        scopes = tuple(str(s) for s in document.get("scopes_supported") or ())
    await _checked(issuer, http.vetting, "authorization server")
    return resource, await _authorization_server(http, str(issuer)), scopes


async def register(
    http: VettedClient, server: AuthServer, redirect_uri: str, scope: str | None
) -> tuple[str, str | None, str]:
    """RFC 7591: (client_id, client_secret, token_endpoint_auth_method). A public client with PKCE
    is asked for; a server that insists on a secret hands one back and we keep it."""
    assert server.registration_endpoint is not None
    body: dict[str, Any] = {
        "client_name": "agentapi",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    if scope:
        body["scope"] = scope
    await _checked(server.registration_endpoint, http.vetting, "registration endpoint")
    try:
        response = await http.post(server.registration_endpoint, json=body)
    except httpx2.HTTPError as exc:
        raise OAuthFlowError(f"client registration failed: {exc.__class__.__name__}") from exc
    if response.status_code not in (200, 201):
        raise OAuthFlowError(f"the authorization server refused client registration ({response.status_code})")
    data = response.json()
    if not isinstance(data, dict) or not data.get("client_id"):
        raise OAuthFlowError("the client registration answer carries no client_id")
    secret = data.get("client_secret")
    method = str(data.get("token_endpoint_auth_method") or ("client_secret_basic" if secret else "none"))
    return str(data["client_id"]), secret, method


def _client_options(client: ClientInfo, secret: str | None, redirect_uri: str | None) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "client_secret": secret,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "revocation_endpoint_auth_method": client.token_endpoint_auth_method,
        "scope": client.scope,
        "redirect_uri": redirect_uri,
        "code_challenge_method": "S256",
    }


async def oauth_client(
    client: ClientInfo,
    secret: str | None,
    url: str,
    what: str,
    settings: Settings,
    resolver: Resolver,
    redirect_uri: str | None = None,
) -> AsyncOAuth2Client:
    """authlib's client for one call to ``url`` (checked now: OAuthFlowError naming ``what``),
    connecting to the addresses that check vetted."""
    vetting = VettedTransport(settings, resolver)
    await _checked(url, vetting, what)
    return AsyncOAuth2Client(
        **_client_options(client, secret, redirect_uri),
        timeout=HTTP_TIMEOUT_SECONDS,
        follow_redirects=False,
        transport=vetting,
    )


def authorization_url(client: ClientInfo, redirect_uri: str, state: str, code_verifier: str) -> str:
    """The URL the user's browser opens: code flow, PKCE S256, RFC 8707 resource indicator."""
    oauth = OAuth2Client(None, **_client_options(client, None, redirect_uri))
    url, _ = oauth.create_authorization_url(
        client.authorization_endpoint, state=state, code_verifier=code_verifier, resource=client.resource
    )
    return str(url)


def _refused(exc: OAuthError) -> str:
    return f"{exc.error}: {exc.description}" if exc.description else str(exc.error)


async def exchange_code(
    client: ClientInfo,
    secret: str | None,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    settings: Settings,
    resolver: Resolver = resolve,
) -> dict[str, Any]:
    oauth = await oauth_client(
        client, secret, client.token_endpoint, "token endpoint", settings, resolver, redirect_uri
    )
    async with oauth:
        try:
            token = await oauth.fetch_token(
                client.token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
                resource=client.resource,
            )
        except OAuthError as exc:
            raise GrantRejected(f"the authorization server refused the code ({_refused(exc)})") from exc
        except httpx2.HTTPError as exc:
            raise OAuthFlowError(f"cannot reach the token endpoint: {exc.__class__.__name__}") from exc
        except ValueError as exc:
            raise OAuthFlowError("the token endpoint answered with something other than a token") from exc
    return dict(token)


async def refresh(
    client: ClientInfo,
    secret: str | None,
    refresh_token: str,
    settings: Settings,
    resolver: Resolver = resolve,
) -> dict[str, Any]:
    """New tokens for a refresh token. GrantRejected when the server says no; OAuthFlowError when
    it could not be asked (worth another try later)."""
    oauth = await oauth_client(client, secret, client.token_endpoint, "token endpoint", settings, resolver)
    async with oauth:
        try:
            token = await oauth.refresh_token(
                client.token_endpoint, refresh_token=refresh_token, resource=client.resource
            )
        except OAuthError as exc:
            raise GrantRejected(f"the authorization server refused the refresh ({_refused(exc)})") from exc
        except httpx2.HTTPError as exc:
            raise OAuthFlowError(f"cannot reach the token endpoint: {exc.__class__.__name__}") from exc
        except ValueError as exc:
            raise OAuthFlowError("the token endpoint answered with something other than a token") from exc
    return dict(token)


async def revoke(
    client: ClientInfo,
    secret: str | None,
    token: str,
    hint: str,
    settings: Settings,
    resolver: Resolver = resolve,
) -> bool:
    """RFC 7009; True when the server confirmed. Servers without a revocation endpoint: False."""
    if not client.revocation_endpoint:
        return False
    try:
        oauth = await oauth_client(
            client, secret, client.revocation_endpoint, "revocation endpoint", settings, resolver
        )
    except OAuthFlowError:
        return False
    async with oauth:
        try:
            response = await oauth.revoke_token(client.revocation_endpoint, token=token, token_type_hint=hint)
        except (OAuthError, httpx2.HTTPError):
            return False
    return bool(response.status_code == 200)
