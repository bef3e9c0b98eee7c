"""Supabase-compatible JWT authentication.

Tokens are verified with HS256 and the shared secret (``AGENTAPI_JWT_SECRET`` / ``SUPABASE_JWT_SECRET``)
and/or with the asymmetric keys of a JWKS (``AGENTAPI_JWKS_URL``, or Supabase's
``/auth/v1/.well-known/jwks.json``). The algorithm a token may use is pinned by where its key comes from:
HS256 only against the shared secret, RS*/PS*/ES*/EdDSA only against a JWKS key of the matching type and
curve. ``alg: none``, an HS256 token "signed" with a public key, or an ES256 header on an RSA key are all
refused before any signature check.

The principal: ``sub`` (a UUID) is the user; the organization and role come from ``app_metadata`` (which only
the service role can write in Supabase), falling back to top-level ``org_id``/``role``. ``user_metadata`` is
user-writable and never read. Superadmin is granted only by ``app_metadata`` (``role: superadmin`` or
``superadmin: true``).

A session client key (``services.sessions.client_keys``) is the other credential: ``Bearer ask_…``
or ``Basic base64(ask_…:)``, for published coder/agentapi clients that can send no JWT. It acts as
the user who minted it, with their role then, and only on the root-path alias routes of its one
session (``CLIENT_KEY_ROUTE``); a JWT is refused there, and a key everywhere else.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from uuid import UUID

import jwt
from jwt import exceptions as jwt_errors
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, ServiceUnavailableException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.openapi.spec import Components, SecurityScheme

from api.jwks import (
    ASYMMETRIC_ALGORITHMS,
    AmbiguousSigningKeyError,
    JWKSCache,
    JWKSUnavailableError,
    UnknownSigningKeyError,
)
from schemas.roles import ORG_ROLES, ROLES
from services.recent import Recent
from services.sessions.client_keys import ClientKeyGrant, looks_like_key, resolve_client_key

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Method, Scope, Scopes

    from schemas.settings import Settings

logger = logging.getLogger("agentapi.auth")

HMAC_ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 16 * 1024
# Verified tokens kept per process: decoding and checking a signature was 12 % of a message's CPU,
# and a client sends the same token with every request. An entry is used only until the token's
# own expiry and while the key that verified it is still the one its header names (a key dropped
# from the JWKS refuses its tokens at once, as before).
VERIFIED_CACHE_SECONDS = 60.0
REALM = "agentapi"

# Paths the app serves without a token (regular expressions, matched against the path).
DEFAULT_AUTH_EXCLUDE: tuple[str, ...] = (
    "^/health",
    "^/ready",
    "^/metrics",
    "^/schema",
    "^/openapi.json$",
    "^/api/v1/webhooks/[^/]+/deliveries",
)
SECURITY_SCHEME_NAME = "BearerJWT"
CLIENT_KEY_SCHEME_NAME = "SessionClientKey"


class AuthError(NotAuthorizedException):
    """A request's credentials are missing or invalid: a 401 with a precise, non-leaky ``detail``.

    ``error`` is the RFC 6750 error code for ``WWW-Authenticate`` (None when no credentials were sent,
    as RFC 6750 section 3.1 asks).
    """

    def __init__(self, detail: str, *, error: str | None = "invalid_token") -> None:
        self.error = error
        super().__init__(detail=detail, headers={"WWW-Authenticate": www_authenticate(error, detail)})


def www_authenticate(error: str | None = None, description: str | None = None) -> str:
    value = f'Bearer realm="{REALM}"'
    if error:
        value += f', error="{error}"'
        if description:
            # A header value is latin-1 on the wire: anything else would fail the response itself.
            safe = description.replace("\\", "").replace('"', "'").encode("ascii", "replace").decode()
            value += f', error_description="{safe}"'
    return value


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified token's user, organization and role."""

    user_id: UUID
    org_id: UUID | None
    role: str  # one of ROLES
    email: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # Set when the credential is a session client key: it reaches only that session's alias routes.
    key_session_id: UUID | None = None

    # Cached: every request of a member asks (tenancy, the message path), and a principal's claims
    # never change (verified tokens hand out the same principal until they expire).
    @cached_property
    def is_superadmin(self) -> bool:
        if self.role == "superadmin":
            return True
        app_metadata = self.claims.get("app_metadata")
        return isinstance(app_metadata, Mapping) and app_metadata.get("superadmin") is True

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """Build the principal from verified claims; raises AuthError on a malformed identity."""
        sub = claims.get("sub")
        try:
            user_id = UUID(sub) if isinstance(sub, str) else None
        except ValueError:
            user_id = None
        if user_id is None:
            raise AuthError("invalid subject: sub must be a UUID")

        app_metadata = claims.get("app_metadata")
        if not isinstance(app_metadata, Mapping):
            app_metadata = {}

        raw_org = (
            app_metadata.get("org_id") if app_metadata.get("org_id") is not None else claims.get("org_id")
        )
        org_id: UUID | None = None
        if raw_org is not None:
            try:
                org_id = UUID(raw_org) if isinstance(raw_org, str) else None
            except ValueError:
                org_id = None
            if org_id is None:
                raise AuthError("invalid org_id claim: must be a UUID")

        meta_role = app_metadata.get("role")
        top_role = claims.get("role")  # Supabase sets "authenticated" here
        if meta_role in ROLES:
            role = meta_role
        elif top_role in ORG_ROLES:
            role = top_role
        else:
            role = "member"

        email = claims.get("email")
        return cls(
            user_id=user_id,
            org_id=org_id,
            role=role,
            email=email if isinstance(email, str) and email else None,
            claims=MappingProxyType(dict(claims)),
        )


# PyJWT's exceptions, most specific first, to the detail a client sees.
_JWT_ERROR_DETAILS: tuple[tuple[type[Exception], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "token expired"),
    (jwt_errors.ImmatureSignatureError, "token not yet valid"),
    (jwt_errors.InvalidAudienceError, "invalid audience"),
    (jwt_errors.InvalidIssuerError, "invalid issuer"),
    (jwt_errors.InvalidSignatureError, "invalid signature"),
    (jwt_errors.InvalidAlgorithmError, "unsupported algorithm"),
    (jwt_errors.InvalidSubjectError, "invalid subject: sub must be a UUID"),
    (jwt_errors.InvalidIssuedAtError, "invalid iat claim"),
    (jwt_errors.InvalidJTIError, "invalid jti claim"),
    (jwt_errors.DecodeError, "malformed token"),
)


class TokenVerifier:
    """Verifies bearer tokens into :class:`Principal` objects. One per process (it holds the JWKS cache)."""

    def __init__(
        self,
        settings: Settings,
        *,
        http_client: Any = None,
        refetch_cooldown_seconds: float = 10.0,
        jwks_timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret: bytes | None = (
            settings.jwt_secret.get_secret_value().encode() if settings.jwt_secret is not None else None
        )
        url = settings.effective_jwks_url
        self._jwks: JWKSCache | None = (
            JWKSCache(
                url,
                cache_seconds=settings.jwks_cache_seconds,
                refetch_cooldown_seconds=refetch_cooldown_seconds,
                timeout_seconds=jwks_timeout_seconds,
                client=http_client,
                clock=clock,
            )
            if url
            else None
        )
        if self._secret is None and self._jwks is None:
            raise ValueError("TokenVerifier needs a JWT secret or a JWKS URL")
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway = settings.jwt_leeway_seconds
        # token -> (alg, kid, the key that verified it, its principal, the second it expires)
        self._verified: Recent[str, tuple[str, object, Any, Principal, float]] = Recent(
            VERIFIED_CACHE_SECONDS
        )

    async def aclose(self) -> None:
        if self._jwks is not None:
            await self._jwks.aclose()

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; raises AuthError (401) or JWKSUnavailableError (503)."""
        cached = self._verified.get(token, None)
        if cached is not None:
            cached_alg, cached_kid, cached_key, cached_principal, expires = cached
            if time.time() < expires and await self._signing_key(cached_alg, cached_kid) is cached_key:
                return cached_principal
            self._verified.forget(token)
        if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise AuthError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt_errors.PyJWTError:
            raise AuthError("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthError("malformed token")

        kid = header.get("kid")
        key = await self._signing_key(alg, kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt_errors.MissingRequiredClaimError as exc:
            raise AuthError(f"missing {exc.claim} claim") from None
        except jwt_errors.PyJWTError as exc:
            detail = next((d for t, d in _JWT_ERROR_DETAILS if isinstance(exc, t)), "invalid token")
            raise AuthError(detail) from None
        principal = Principal.from_claims(claims)
        self._verified.put(token, (alg, kid, key, principal, float(claims["exp"]) + self.leeway))
        return principal

    async def _signing_key(self, alg: str, kid: object) -> Any:
        """The key a token with this header must be signed with; AuthError when there is none."""
        if alg == HMAC_ALGORITHM and self._secret is not None:
            return self._secret
        if alg in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            if kid is not None and not isinstance(kid, str):
                raise AuthError("malformed token")
            try:
                signing_key = await self._jwks.get(kid, alg)
            except UnknownSigningKeyError:
                raise AuthError("unknown signing key") from None
            except AmbiguousSigningKeyError:
                raise AuthError("token has no key id (kid)") from None
            if alg not in signing_key.algorithms:
                raise AuthError("unsupported algorithm")
            return signing_key.key
        # "none", HS256 without a shared secret (e.g. signed with a public key), HS384, unknown names...
        raise AuthError("unsupported algorithm")


def parse_bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; AuthError when there is none."""
    if not authorization or not authorization.strip():
        raise AuthError("missing bearer token", error=None)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError(
            "missing bearer token (Authorization scheme must be Bearer, or Basic with a session client key)",
            error="invalid_request",
        )
    token = token.strip()
    if not token:
        raise AuthError("missing bearer token", error="invalid_request")
    return token


def client_key_of(authorization: str | None) -> str | None:
    """The session client key an ``Authorization`` header carries, or None when it carries none
    (then it is a JWT's, or missing). A key comes as ``Bearer ask_…`` or, from a client given the
    key as URL userinfo, as ``Basic base64(key:)`` (any password is ignored). Basic credentials
    that are not a client key are refused: no other credential is accepted that way."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value if looks_like_key(value) else None
    if scheme.lower() != "basic":
        return None
    try:
        user = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("malformed Basic credentials", error="invalid_request") from None
    if not looks_like_key(user):
        raise AuthError(
            "Basic credentials are accepted only for a session client key as the user name",
            error="invalid_request",
        )
    return user


VerifierGetter = Callable[["Litestar"], TokenVerifier]
FailureHook = Callable[[ASGIConnection, AuthError], Awaitable[None]]
# The route option that marks the root-path alias routes, the only ones a client key reaches.
CLIENT_KEY_ROUTE = "session_client_key"
CLIENT_KEY_PATHS = "/status, /messages, /message, /events and /internal/screen"


def key_principal(grant: ClientKeyGrant) -> Principal:
    """The principal a client key acts as: its minter, with the role they had, confined to its session."""
    return Principal(
        user_id=grant.user_id, org_id=grant.org_id, role=grant.role, key_session_id=grant.session_id
    )


def confine(principal: Principal, key_route: bool) -> None:
    """A client key reaches only the alias routes, and the alias routes take only a client key
    (they name no session of their own: the key does)."""
    if principal.key_session_id is not None and not key_route:
        raise AuthError(f"a session client key reaches only {CLIENT_KEY_PATHS}")
    if principal.key_session_id is None and key_route:
        raise AuthError(
            "this path takes a session client key (POST /api/v1/sessions/{id}/client-keys);"
            " with a JWT, use /api/v1/sessions/{id}/..."
        )


def authorization_header(scope: Scope) -> str | None:
    """The request's first ``Authorization`` header, as ``connection.headers.get`` gives it: read
    from the scope, since building the request's header multidict for it was ~8 % of an accepted
    message's CPU once nothing else on the message path needed the multidict."""
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            return value.decode("latin-1")
    return None


def _verifier_from_state(app: Litestar) -> TokenVerifier:
    state = app.state
    resources = state.get("resources")
    verifier = getattr(resources, "verifier", None) or state.get("token_verifier")
    if not isinstance(verifier, TokenVerifier):
        raise RuntimeError("no TokenVerifier: pass verifier= or get_verifier= to JWTAuthMiddleware")
    return verifier


class JWTAuthMiddleware(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` to the :class:`Principal` of the request's bearer token (``request.auth`` is the
    raw token), or answers 401 problem+json with ``WWW-Authenticate``.

    The verifier is ``verifier`` if given, else ``get_verifier(app)`` (default:
    ``app.state["resources"].verifier`` or ``app.state["token_verifier"]``), looked up per request so it can
    be created in the lifespan.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: TokenVerifier | None = None,
        get_verifier: VerifierGetter | None = None,
        exclude: str | Sequence[str] | None = DEFAULT_AUTH_EXCLUDE,
        exclude_from_auth_key: str = "exclude_from_auth",
        exclude_http_methods: Sequence[Method] | None = None,
        scopes: Scopes | None = None,
        on_failure: FailureHook | None = None,
        jwks_retry_after_seconds: int = 5,
    ) -> None:
        super().__init__(
            app,
            exclude=list(exclude) if exclude is not None and not isinstance(exclude, str) else exclude,
            exclude_from_auth_key=exclude_from_auth_key,
            exclude_http_methods=exclude_http_methods,
            scopes=scopes,
        )
        self._verifier = verifier
        self._get_verifier = get_verifier or _verifier_from_state
        self._on_failure = on_failure
        self._retry_after = jwks_retry_after_seconds

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        authorization = authorization_header(connection.scope)
        try:
            key = client_key_of(authorization)
            if key is not None:
                grant = await resolve_client_key(connection.app.state["resources"], key)
                if grant is None:
                    raise AuthError("unknown, expired or revoked session client key")
                token, principal = key, key_principal(grant)
            else:
                verifier = self._verifier or self._get_verifier(connection.app)
                token = parse_bearer(authorization)
                principal = await verifier.verify(token)
            confine(principal, bool(connection.route_handler.opt.get(CLIENT_KEY_ROUTE)))
        except AuthError as exc:
            if self._on_failure is not None:
                try:
                    await self._on_failure(connection, exc)
                except Exception:
                    logger.exception("auth failure hook failed")
            raise
        except JWKSUnavailableError:
            raise ServiceUnavailableException(
                detail="token signing keys are temporarily unavailable",
                headers={"Retry-After": str(self._retry_after)},
            ) from None
        return AuthenticationResult(user=principal, auth=token)


def auth_middleware(
    *,
    verifier: TokenVerifier | None = None,
    get_verifier: VerifierGetter | None = None,
    exclude: Sequence[str] = DEFAULT_AUTH_EXCLUDE,
    on_failure: FailureHook | None = None,
) -> DefineMiddleware:
    """``Litestar(middleware=[auth_middleware(...)])``."""
    return DefineMiddleware(
        JWTAuthMiddleware,
        verifier=verifier,
        get_verifier=get_verifier,
        exclude=exclude,
        on_failure=on_failure,
    )


def openapi_components() -> Components:
    """The bearer-JWT security scheme: ``OpenAPIConfig(components=[openapi_components()], security=...)``."""
    return Components(
        security_schemes={
            SECURITY_SCHEME_NAME: SecurityScheme(
                type="http",
                scheme="bearer",
                bearer_format="JWT",
                description="A Supabase-compatible JWT: `Authorization: Bearer <token>`",
            ),
            CLIENT_KEY_SCHEME_NAME: SecurityScheme(
                type="http",
                scheme="basic",
                description=(
                    "A session client key (`POST /api/v1/sessions/{id}/client-keys`) as the user name"
                    " with an empty password, or as `Authorization: Bearer ask_…`; only for the"
                    " root-path alias of its session"
                ),
            ),
        }
    )


def client_key_security() -> list[dict[str, list[str]]]:
    """The security requirement of the root-path alias routes: a session client key."""
    return [{CLIENT_KEY_SCHEME_NAME: []}]


def openapi_security() -> list[dict[str, list[str]]]:
    """The app-wide security requirement; routes without auth set ``security=[]`` on their handler."""
    return [{SECURITY_SCHEME_NAME: []}]
