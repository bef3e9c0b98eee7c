"""JWT authentication: HS256 with the shared secret, RS256/ES256/EdDSA from a JWKS served over real HTTP,
and every way a token can be wrong answered with a precise 401 problem+json."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from litestar import Litestar, Request, get, post
from litestar.openapi import OpenAPIConfig
from litestar.testing import AsyncTestClient

from api.auth import (
    DEFAULT_AUTH_EXCLUDE,
    AuthError,
    Principal,
    TokenVerifier,
    auth_middleware,
    openapi_components,
    openapi_security,
)
from api.problems import exception_handlers
from api.tokens import mint_token
from schemas.settings import Settings
from tests.fixtures.auth import JWKSServer, TokenFactory, build_claims, hmac_token, unsigned_token

pytestmark = pytest.mark.timeout(60)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": None,
        "jwks_url": None,
        "supabase_url": None,
        "jwt_audience": "authenticated",
        "jwt_issuer": None,
        "jwt_leeway_seconds": 0,
        "jwks_cache_seconds": 600,
    }
    values.update(overrides)
    return Settings(**values)


def build_app(verifier: TokenVerifier, **auth: Any) -> Litestar:
    @get("/api/v1/whoami")
    async def whoami(request: Request[Principal, str, Any]) -> dict[str, Any]:
        p = request.user
        return {
            "user_id": str(p.user_id),
            "org_id": str(p.org_id) if p.org_id else None,
            "role": p.role,
            "email": p.email,
            "superadmin": p.is_superadmin,
            "token_is_auth": request.auth.count(".") == 2,
        }

    @get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @post("/api/v1/webhooks/abc/deliveries")
    async def delivery() -> dict[str, str]:
        return {"hook": "abc"}

    return Litestar(
        [whoami, health, delivery],
        middleware=[auth_middleware(verifier=verifier, **auth)],
        exception_handlers=exception_handlers,
        openapi_config=OpenAPIConfig(
            title="test", version="0", components=[openapi_components()], security=openapi_security()
        ),
    )


@pytest.fixture
async def hs_verifier(jwt_secret: str) -> AsyncIterator[TokenVerifier]:
    verifier = TokenVerifier(make_settings(jwt_secret=jwt_secret))
    yield verifier
    await verifier.aclose()


@pytest.fixture
async def hs_client(hs_verifier: TokenVerifier) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(build_app(hs_verifier)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_401(response: httpx.Response, detail: str, *, error: str | None = "invalid_token") -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 401
    assert body["title"] == "Unauthorized"
    assert body["type"]
    assert body["detail"] == detail, body
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="agentapi"')
    if error:
        assert f'error="{error}"' in challenge
        if error == "invalid_token":
            assert f'error_description="{detail}"' in challenge
    else:
        assert "error=" not in challenge


# ------------------------------------------------------------------------------------------------------------
# HS256 with the shared secret


async def test_valid_hs256_token(hs_client: AsyncTestClient[Litestar], jwt_secret: str) -> None:
    user, org = uuid.uuid4(), uuid.uuid4()
    token = mint_token(jwt_secret, user_id=user, org_id=org, role="owner", email="a@example.com")
    response = await hs_client.get("/api/v1/whoami", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "user_id": str(user),
        "org_id": str(org),
        "role": "owner",
        "email": "a@example.com",
        "superadmin": False,
        "token_is_auth": True,
    }


async def test_bearer_scheme_is_case_insensitive(
    hs_client: AsyncTestClient[Litestar], make_token: TokenFactory
) -> None:
    response = await hs_client.get("/api/v1/whoami", headers={"Authorization": f"bearer  {make_token()}"})
    assert response.status_code == 200, response.text


async def test_no_token(hs_client: AsyncTestClient[Litestar]) -> None:
    assert_401(await hs_client.get("/api/v1/whoami"), "missing bearer token", error=None)


async def test_other_scheme(hs_client: AsyncTestClient[Litestar]) -> None:
    response = await hs_client.get("/api/v1/whoami", headers={"Authorization": "Digest username=x"})
    assert_401(
        response,
        "missing bearer token (Authorization scheme must be Bearer, or Basic with a session client key)",
        error="invalid_request",
    )
    # Basic is only how published coder/agentapi clients send a session client key (URL userinfo).
    response = await hs_client.get("/api/v1/whoami", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_401(
        response,
        "Basic credentials are accepted only for a session client key as the user name",
        error="invalid_request",
    )


async def test_expired_token(hs_client: AsyncTestClient[Litestar], make_token: TokenFactory) -> None:
    response = await hs_client.get("/api/v1/whoami", headers=bearer(make_token(ttl_seconds=-60)))
    assert_401(response, "token expired")


async def test_leeway_accepts_a_just_expired_token(jwt_secret: str, make_token: TokenFactory) -> None:
    verifier = TokenVerifier(make_settings(jwt_secret=jwt_secret, jwt_leeway_seconds=30))
    principal = await verifier.verify(make_token(exp=int(time.time()) - 5))
    assert principal.role == "member"
    with pytest.raises(AuthError, match="token expired"):
        await verifier.verify(make_token(exp=int(time.time()) - 60))


async def test_a_verified_token_still_expires(jwt_secret: str, make_token: TokenFactory) -> None:
    """Verified tokens are kept per process, never past their own expiry."""
    verifier = TokenVerifier(make_settings(jwt_secret=jwt_secret, jwt_leeway_seconds=0))
    exp = int(time.time()) + 1
    token = make_token(exp=exp)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # the second use is answered from the cache
    while time.time() < exp:
        await asyncio.sleep(0.05)
    with pytest.raises(AuthError, match="token expired"):
        await verifier.verify(token)


async def test_missing_exp(hs_client: AsyncTestClient[Litestar], make_token: TokenFactory) -> None:
    response = await hs_client.get("/api/v1/whoami", headers=bearer(make_token(without=("exp",))))
    assert_401(response, "missing exp claim")


async def test_nbf_in_the_future(hs_client: AsyncTestClient[Litestar], make_token: TokenFactory) -> None:
    response = await hs_client.get("/api/v1/whoami", headers=bearer(make_token(nbf=int(time.time()) + 600)))
    assert_401(response, "token not yet valid")


async def test_wrong_audience(hs_client: AsyncTestClient[Litestar], make_token: TokenFactory) -> None:
    response = await hs_client.get("/api/v1/whoami", headers=bearer(make_token(aud="someone-else")))
    assert_401(response, "invalid audience")


async def test_missing_audience(hs_client: AsyncTestClient[Litestar], make_token: TokenFactory) -> None:
    response = await hs_client.get("/api/v1/whoami", headers=bearer(make_token(without=("aud",))))
    assert_401(response, "missing aud claim")


async def test_wrong_issuer(jwt_secret: str, make_token: TokenFactory) -> None:
    issuer = "https://project.supabase.co/auth/v1"
    verifier = TokenVerifier(make_settings(jwt_secret=jwt_secret, jwt_issuer=issuer))
    assert (await verifier.verify(make_token(iss=issuer))).role == "member"
    with pytest.raises(AuthError, match="invalid issuer"):
        await verifier.verify(make_token(iss="https://evil.example/auth/v1"))
    with pytest.raises(AuthError, match="missing iss claim"):
        await verifier.verify(make_token())


async def test_alg_none(hs_client: AsyncTestClient[Litestar]) -> None:
    token = unsigned_token(build_claims())
    assert_401(await hs_client.get("/api/v1/whoami", headers=bearer(token)), "unsupported algorithm")


@pytest.mark.parametrize("alg", ["None", "NONE", "HS384", "HS512", "RS256", "XX999"])
async def test_other_algorithms_refused_without_a_matching_key(
    hs_client: AsyncTestClient[Litestar], jwt_secret: str, alg: str
) -> None:
    # An HS256-only verifier refuses HS384/HS512 (even with the right secret) and asymmetric algs.
    if alg.startswith("HS"):
        token = jwt.encode(build_claims(), jwt_secret, algorithm=alg)
    else:
        token = hmac_token(build_claims(), jwt_secret.encode(), header={"alg": alg})
    assert_401(await hs_client.get("/api/v1/whoami", headers=bearer(token)), "unsupported algorithm")


async def test_wrong_secret(hs_client: AsyncTestClient[Litestar]) -> None:
    token = jwt.encode(build_claims(), "another-secret-entirely-32-bytes-long!!", algorithm="HS256")
    assert_401(await hs_client.get("/api/v1/whoami", headers=bearer(token)), "invalid signature")


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJIUzI1NiJ9.!!!.abc", "x" * 20_000, "e30.e30.e30"],
)
async def test_garbage_tokens(hs_client: AsyncTestClient[Litestar], token: str) -> None:
    assert_401(await hs_client.get("/api/v1/whoami", headers=bearer(token)), "malformed token")


async def test_non_uuid_subject(hs_client: AsyncTestClient[Litestar], make_token: TokenFactory) -> None:
    token = make_token(claims={"sub": "not-a-uuid"})
    assert_401(
        await hs_client.get("/api/v1/whoami", headers=bearer(token)), "invalid subject: sub must be a UUID"
    )


async def test_non_string_subject(hs_client: AsyncTestClient[Litestar], make_token: TokenFactory) -> None:
    token = make_token(claims={"sub": 12345})
    assert_401(
        await hs_client.get("/api/v1/whoami", headers=bearer(token)), "invalid subject: sub must be a UUID"
    )


async def test_missing_subject(hs_client: AsyncTestClient[Litestar], make_token: TokenFactory) -> None:
    token = make_token(without=("sub",))
    assert_401(await hs_client.get("/api/v1/whoami", headers=bearer(token)), "missing sub claim")


async def test_invalid_org_id(hs_client: AsyncTestClient[Litestar], make_token: TokenFactory) -> None:
    token = make_token(claims={"app_metadata": {"org_id": "acme", "role": "admin"}})
    assert_401(
        await hs_client.get("/api/v1/whoami", headers=bearer(token)), "invalid org_id claim: must be a UUID"
    )


async def test_excluded_paths_need_no_token(hs_client: AsyncTestClient[Litestar]) -> None:
    assert (await hs_client.get("/health")).json() == {"status": "ok"}
    assert (await hs_client.post("/api/v1/webhooks/abc/deliveries")).json() == {"hook": "abc"}
    schema = (await hs_client.get("/schema/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["BearerJWT"] == {
        "type": "http",
        "description": "A Supabase-compatible JWT: `Authorization: Bearer <token>`",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert schema["security"] == [{"BearerJWT": []}]
    assert "^/health" in DEFAULT_AUTH_EXCLUDE


async def test_failure_hook_sees_auth_failures(hs_verifier: TokenVerifier) -> None:
    seen: list[str] = []

    async def on_failure(connection: Any, error: AuthError) -> None:
        seen.append(f"{connection.url.path}: {error.detail}")

    async with AsyncTestClient(build_app(hs_verifier, on_failure=on_failure)) as client:
        await client.get("/api/v1/whoami")
    assert seen == ["/api/v1/whoami: missing bearer token"]


# ------------------------------------------------------------------------------------------------------------
# Claims to principal


def principal(**claims: Any) -> Principal:
    base: dict[str, Any] = {"sub": str(uuid.uuid4()), "aud": "authenticated", "exp": 0}
    base.update(claims)
    return Principal.from_claims(base)


def test_supabase_top_level_role_is_member() -> None:
    p = principal(role="authenticated")
    assert (p.role, p.org_id, p.is_superadmin) == ("member", None, False)


def test_role_and_org_from_app_metadata_win() -> None:
    org, other = uuid.uuid4(), uuid.uuid4()
    p = principal(role="owner", org_id=str(other), app_metadata={"org_id": str(org), "role": "admin"})
    assert (p.role, p.org_id) == ("admin", org)


def test_top_level_org_and_role_fallback() -> None:
    org = uuid.uuid4()
    p = principal(role="owner", org_id=str(org), app_metadata={"provider": "email"})
    assert (p.role, p.org_id) == ("owner", org)


def test_superadmin_only_from_app_metadata() -> None:
    assert principal(role="superadmin").role == "member"
    assert not principal(role="superadmin").is_superadmin
    assert not principal(user_metadata={"role": "superadmin", "superadmin": True}).is_superadmin
    assert principal(app_metadata={"role": "superadmin"}).is_superadmin
    flagged = principal(app_metadata={"role": "owner", "superadmin": True})
    assert (flagged.role, flagged.is_superadmin) == ("owner", True)


def test_unknown_roles_are_member() -> None:
    assert principal(app_metadata={"role": "billing"}).role == "member"
    assert principal(app_metadata={"role": 7}, role="admin").role == "admin"


def test_principal_is_frozen_and_hashable() -> None:
    p = principal(email="x@example.com")
    with pytest.raises(AttributeError):
        p.role = "owner"  # type: ignore[misc]
    assert hash(p) == hash(Principal(p.user_id, p.org_id, p.role, p.email))


def test_mint_token_claim_shape(jwt_secret: str) -> None:
    user, org = uuid.uuid4(), uuid.uuid4()
    token = mint_token(
        jwt_secret,
        user_id=str(user),
        org_id=org,
        role="admin",
        ttl_seconds=120,
        email="e@x.io",
        superadmin=True,
    )
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, jwt_secret, algorithms=["HS256"], audience="authenticated")
    assert claims["sub"] == str(user)
    assert claims["role"] == "authenticated"
    assert claims["app_metadata"] == {"org_id": str(org), "role": "admin", "superadmin": True}
    assert claims["exp"] - claims["iat"] == 120
    assert claims["email"] == "e@x.io"
    with pytest.raises(ValueError):
        mint_token(jwt_secret, user_id=user, org_id=org, role="king")
    with pytest.raises(ValueError):
        mint_token(jwt_secret, user_id="nobody", org_id=org, role="member")


# ------------------------------------------------------------------------------------------------------------
# JWKS (asymmetric keys, fetched over HTTP)


class Clock:
    """The JWKS cache's clock, moved on by the test: cache ages and cooldowns without waiting
    (in steps a float holds exactly, so a cooldown passes exactly when the test says)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def jwks_verifier(server: JWKSServer, clock: Clock | None = None, **settings: Any) -> TokenVerifier:
    cooldown = settings.pop("refetch_cooldown_seconds", 10.0)
    return TokenVerifier(
        make_settings(jwks_url=server.url, **settings),
        refetch_cooldown_seconds=cooldown,
        clock=clock or Clock(),
    )


async def test_jwks_rs256_es256_and_eddsa_verify(jwks_server: JWKSServer) -> None:
    jwks_server.add_key("OKP")
    verifier = jwks_verifier(jwks_server)
    try:
        async with AsyncTestClient(build_app(verifier)) as client:
            for kty in ("RSA", "EC", "OKP"):
                user = uuid.uuid4()
                response = await client.get(
                    "/api/v1/whoami", headers=bearer(jwks_server.token(kty=kty, user_id=user))
                )
                assert response.status_code == 200, (kty, response.text)
                assert response.json()["user_id"] == str(user)
        assert jwks_server.fetch_count == 1
    finally:
        await verifier.aclose()


async def test_supabase_url_derives_the_jwks_url(jwks_server: JWKSServer) -> None:
    base = jwks_server.url.removesuffix("/auth/v1/.well-known/jwks.json")
    verifier = TokenVerifier(make_settings(supabase_url=base + "/"))
    try:
        assert (await verifier.verify(jwks_server.token(kty="EC"))).role == "member"
    finally:
        await verifier.aclose()


async def test_jwks_is_cached(jwks_server: JWKSServer) -> None:
    verifier = jwks_verifier(jwks_server)
    try:
        for _ in range(10):
            await verifier.verify(jwks_server.token())
        assert jwks_server.fetch_count == 1
    finally:
        await verifier.aclose()


async def test_jwks_cache_expires(jwks_server: JWKSServer) -> None:
    clock = Clock()
    verifier = jwks_verifier(jwks_server, clock, jwks_cache_seconds=1)
    try:
        await verifier.verify(jwks_server.token())
        clock.advance(0.5)
        await verifier.verify(jwks_server.token())
        assert jwks_server.fetch_count == 1
        clock.advance(0.5)
        await verifier.verify(jwks_server.token())
        assert jwks_server.fetch_count == 2
    finally:
        await verifier.aclose()


async def test_concurrent_requests_share_one_fetch(jwks_server: JWKSServer) -> None:
    jwks_server.delay_seconds = 0.3
    verifier = jwks_verifier(jwks_server)
    try:
        tokens = [jwks_server.token(kty="RSA" if i % 2 else "EC") for i in range(25)]
        principals = await asyncio.gather(*(verifier.verify(t) for t in tokens))
        assert len(principals) == 25
        assert jwks_server.fetch_count == 1
    finally:
        await verifier.aclose()


async def test_key_rotation_triggers_one_refetch(jwks_server: JWKSServer) -> None:
    clock = Clock()
    verifier = jwks_verifier(jwks_server, clock, refetch_cooldown_seconds=0.5)
    try:
        await verifier.verify(jwks_server.token())
        assert jwks_server.fetch_count == 1
        clock.advance(0.5)
        new_key = jwks_server.rotate("RSA", keep_old=False)
        tokens = [jwks_server.token(key=new_key) for _ in range(10)]
        await asyncio.gather(*(verifier.verify(t) for t in tokens))
        for token in tokens:
            await verifier.verify(token)
        assert jwks_server.fetch_count == 2
    finally:
        await verifier.aclose()


async def test_a_verified_token_is_refused_once_its_key_leaves_the_jwks(jwks_server: JWKSServer) -> None:
    verifier = jwks_verifier(jwks_server, refetch_cooldown_seconds=0)
    try:
        old = jwks_server.token()
        await verifier.verify(old)
        await verifier.verify(old)
        new_key = jwks_server.rotate("RSA", keep_old=False)
        await verifier.verify(jwks_server.token(key=new_key))  # an unknown kid refetches the JWKS
        with pytest.raises(AuthError, match="unknown signing key"):
            await verifier.verify(old)
    finally:
        await verifier.aclose()


async def test_unknown_kid_flood_does_not_hammer_the_jwks(jwks_server: JWKSServer) -> None:
    clock = Clock()
    verifier = jwks_verifier(jwks_server, clock, refetch_cooldown_seconds=0.5)
    try:
        await verifier.verify(jwks_server.token())
        assert jwks_server.fetch_count == 1
        clock.advance(0.5)  # the cooldown has passed: the first bogus kid may refetch, once

        async def bogus(i: int) -> str:
            try:
                await verifier.verify(jwks_server.token(kid=f"bogus-{i}"))
            except AuthError as exc:
                return exc.detail
            return "accepted"

        details = await asyncio.gather(*(bogus(i) for i in range(100)))
        details += [await bogus(i) for i in range(100, 200)]
        assert set(details) == {"unknown signing key"}
        assert jwks_server.fetch_count == 2, "one refetch within the cooldown"
        clock.advance(0.5)
        assert await bogus(200) == "unknown signing key"
        assert jwks_server.fetch_count == 3, "and one more once it has passed"
    finally:
        await verifier.aclose()


async def test_hs256_signed_with_the_rsa_public_key_is_refused(
    jwks_server: JWKSServer, jwt_secret: str
) -> None:
    rsa_key = jwks_server.key("RSA")
    pem = rsa_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = rsa_key.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = [hmac_token(build_claims(), key, header={"kid": rsa_key.kid}) for key in (pem, der)]

    jwks_only = jwks_verifier(jwks_server)
    both = jwks_verifier(jwks_server, jwt_secret=jwt_secret)
    try:
        async with AsyncTestClient(build_app(jwks_only)) as client:
            for token in forged:
                assert_401(await client.get("/api/v1/whoami", headers=bearer(token)), "unsupported algorithm")
        for token in forged:
            with pytest.raises(AuthError, match="invalid signature"):
                await both.verify(token)
        # The JWKS keys still work on the verifier that also has a secret.
        assert (await both.verify(jwks_server.token())).role == "member"
    finally:
        await jwks_only.aclose()
        await both.aclose()


async def test_algorithm_must_match_the_key_type(jwks_server: JWKSServer) -> None:
    verifier = jwks_verifier(jwks_server)
    rsa_key, ec_key = jwks_server.key("RSA"), jwks_server.key("EC")
    try:
        # Signed by the EC key but presented with the RSA key's kid, and vice versa.
        with pytest.raises(AuthError, match="unsupported algorithm"):
            await verifier.verify(jwks_server.sign(build_claims(), key=ec_key, kid=rsa_key.kid))
        with pytest.raises(AuthError, match="unsupported algorithm"):
            await verifier.verify(jwks_server.sign(build_claims(), key=rsa_key, kid=ec_key.kid))
        # RS512 with a key published as "alg": "RS256" is refused too.
        with pytest.raises(AuthError, match="unsupported algorithm"):
            await verifier.verify(jwks_server.sign(build_claims(), key=rsa_key, alg="RS512"))
        # alg none naming a real kid.
        with pytest.raises(AuthError, match="unsupported algorithm"):
            await verifier.verify(unsigned_token(build_claims(), header={"kid": rsa_key.kid}))
    finally:
        await verifier.aclose()


async def test_symmetric_keys_in_a_jwks_are_ignored(jwks_server: JWKSServer) -> None:
    secret = b"a-symmetric-secret-published-in-the-jwks!"
    jwks_server.extra_entries.append(
        {"kty": "oct", "kid": "oct-1", "alg": "HS256", "k": jwt.utils.base64url_encode(secret).decode()}
    )
    verifier = jwks_verifier(jwks_server)
    try:
        token = jwt.encode(build_claims(), secret, algorithm="HS256", headers={"kid": "oct-1"})
        with pytest.raises(AuthError, match="unsupported algorithm"):
            await verifier.verify(token)
    finally:
        await verifier.aclose()


async def test_jwks_token_checks_still_apply(jwks_server: JWKSServer) -> None:
    verifier = jwks_verifier(jwks_server)
    try:
        with pytest.raises(AuthError, match="token expired"):
            await verifier.verify(jwks_server.token(ttl_seconds=-60))
        with pytest.raises(AuthError, match="invalid audience"):
            await verifier.verify(jwks_server.token(aud="other"))
        other = JWKSServer()  # same kid, different key material: a forged signature
        forged_key = other.add_key("RSA", kid=jwks_server.key("RSA").kid)
        with pytest.raises(AuthError, match="invalid signature"):
            await verifier.verify(jwks_server.token(key=forged_key))
        # No kid with two candidate keys of different types: the EC token matches exactly one key.
        assert (await verifier.verify(jwks_server.token(kty="EC", kid=None))).role == "member"
    finally:
        await verifier.aclose()


async def test_jwks_unavailable_is_503_not_401(jwks_server: JWKSServer) -> None:
    jwks_server.fail_status = 500
    verifier = jwks_verifier(jwks_server)
    try:
        async with AsyncTestClient(build_app(verifier)) as client:
            response = await client.get("/api/v1/whoami", headers=bearer(jwks_server.token()))
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["retry-after"] == "5"
        assert response.json()["detail"] == "token signing keys are temporarily unavailable"
    finally:
        await verifier.aclose()


async def test_stale_keys_survive_a_jwks_outage(jwks_server: JWKSServer) -> None:
    clock = Clock()
    verifier = jwks_verifier(jwks_server, clock, jwks_cache_seconds=0)
    try:
        await verifier.verify(jwks_server.token())
        jwks_server.fail_status = 503
        clock.advance(0.5)
        assert (await verifier.verify(jwks_server.token())).role == "member"
        assert jwks_server.fetch_count == 2
        # Failure backoff: no new fetch on every request while the JWKS server is down.
        for _ in range(5):
            await verifier.verify(jwks_server.token())
        assert jwks_server.fetch_count == 2
    finally:
        await verifier.aclose()


def test_verifier_needs_a_key_source() -> None:
    settings = make_settings(jwt_secret="x" * 32)
    object.__setattr__(settings, "jwt_secret", None)
    with pytest.raises(ValueError):
        TokenVerifier(settings)
