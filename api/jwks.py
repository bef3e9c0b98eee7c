"""A JSON Web Key Set fetched over HTTP and cached, for verifying asymmetric JWTs.

- Fetched with an async httpx client, never on a blocking call in the event loop.
- Cached for ``cache_seconds``; an unknown ``kid`` triggers a refetch (key rotation), at most once per
  ``refetch_cooldown_seconds``, so a flood of tokens with made-up key ids cannot hammer the JWKS server.
- Concurrent callers share one in-flight fetch.
- When a refresh fails, keys from the last good fetch keep working for ``stale_grace_seconds`` (an
  identity-provider blip should not log everybody out); without any usable keys the caller gets
  :class:`JWKSUnavailableError` (a 503, not a 401: the token may well be valid).
- Symmetric (``kty: oct``) keys and keys whose ``use`` is not ``sig`` are ignored: a JWKS must never
  turn into a source of HMAC secrets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

logger = logging.getLogger("agentapi.auth.jwks")

# The algorithms a key of each type may verify; a JWK's own "alg" narrows this to exactly one.
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS_BY_CURVE: Mapping[str, frozenset[str]] = {
    "P-256": frozenset({"ES256"}),
    "P-384": frozenset({"ES384"}),
    "P-521": frozenset({"ES512", "ES521"}),
}
OKP_ALGORITHMS_BY_CURVE: Mapping[str, frozenset[str]] = {
    "Ed25519": frozenset({"EdDSA"}),
    "Ed448": frozenset({"EdDSA"}),
}
ASYMMETRIC_ALGORITHMS = (
    RSA_ALGORITHMS
    | frozenset().union(*EC_ALGORITHMS_BY_CURVE.values())
    | frozenset().union(*OKP_ALGORITHMS_BY_CURVE.values())
)

MAX_JWKS_BYTES = 256 * 1024


class JWKSUnavailableError(Exception):
    """No usable signing keys: the JWKS could not be fetched or held no usable key."""


class UnknownSigningKeyError(Exception):
    """The token names a key id the JWKS does not hold (even after a permitted refetch)."""


class AmbiguousSigningKeyError(Exception):
    """The token names no key id and the JWKS holds more than one key that could verify it."""


def algorithms_for_jwk(jwk: Mapping[str, Any]) -> frozenset[str]:
    """The JWS algorithms this public key may verify (empty when none: symmetric or unknown keys)."""
    kty = jwk.get("kty")
    crv = jwk.get("crv")
    if kty == "RSA":
        allowed = RSA_ALGORITHMS
    elif kty == "EC" and isinstance(crv, str):
        allowed = EC_ALGORITHMS_BY_CURVE.get(crv, frozenset())
    elif kty == "OKP" and isinstance(crv, str):
        allowed = OKP_ALGORITHMS_BY_CURVE.get(crv, frozenset())
    else:
        return frozenset()
    alg = jwk.get("alg")
    if alg is None:
        return allowed
    return frozenset({alg}) & allowed if isinstance(alg, str) else frozenset()


@dataclass(frozen=True)
class SigningKey:
    kid: str | None
    algorithms: frozenset[str]
    key: Any  # a cryptography public key object, handed to PyJWT as is


def parse_jwks(document: Any) -> list[SigningKey]:
    """The usable signature keys of a JWKS document; unusable entries are skipped with a warning."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set (no 'keys' list)")
    keys: list[SigningKey] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        use = entry.get("use")
        if use is not None and use != "sig":
            continue
        algorithms = algorithms_for_jwk(entry)
        if not algorithms:
            logger.warning(
                "JWKS: skipping key %r (kty %r): no asymmetric signature algorithm",
                entry.get("kid"),
                entry.get("kty"),
            )
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            # Any algorithm of the family builds the same public key object.
            public = PyJWK(entry, algorithm=sorted(algorithms)[0]).key
        except (PyJWTError, ValueError, TypeError) as exc:
            logger.warning("JWKS: skipping key %r: %s", kid, exc)
            continue
        keys.append(SigningKey(kid=kid, algorithms=algorithms, key=public))
    return keys


class JWKSCache:
    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 600,
        refetch_cooldown_seconds: float = 10.0,
        failure_backoff_seconds: float = 2.0,
        stale_grace_seconds: float = 3600.0,
        timeout_seconds: float = 5.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.refetch_cooldown_seconds = refetch_cooldown_seconds
        self.failure_backoff_seconds = failure_backoff_seconds
        self.stale_grace_seconds = stale_grace_seconds
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._given_client = client
        self._client: httpx.AsyncClient | None = client
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._keys: list[SigningKey] = []
        self._fetched_at = -math.inf  # last successful fetch
        self._attempted_at = -math.inf  # last fetch started
        self._failed_at = -math.inf  # last failed fetch
        self._inflight: asyncio.Future[None] | None = None
        self.fetch_count = 0  # fetches started, for metrics and tests

    # -- public -------------------------------------------------------------------------------------------
    async def get(self, kid: str | None, alg: str) -> SigningKey:
        """The key that should verify a token with this ``kid`` and ``alg``.

        Raises UnknownSigningKeyError, AmbiguousSigningKeyError or JWKSUnavailableError.
        """
        now = self._clock()
        if now - self._fetched_at >= self.cache_seconds:
            await self._refresh_if_allowed(now, cooldown=0.0)
        key = self._find(kid, alg)
        if key is None and kid is not None:
            # Perhaps the issuer rotated keys: refetch, but not more than once per cooldown.
            await self._refresh_if_allowed(self._clock(), cooldown=self.refetch_cooldown_seconds)
            key = self._find(kid, alg)
        if key is None:
            if not self._usable_keys(self._clock()):
                raise JWKSUnavailableError("no signing keys available")
            if kid is None:
                raise AmbiguousSigningKeyError()
            raise UnknownSigningKeyError(kid)
        return key

    async def aclose(self) -> None:
        if self._client is not None and self._client is not self._given_client:
            await self._client.aclose()
        self._client = self._given_client

    # -- internals ----------------------------------------------------------------------------------------
    def _usable_keys(self, now: float) -> list[SigningKey]:
        if now - self._fetched_at >= self.cache_seconds + self.stale_grace_seconds:
            return []
        return self._keys

    def _find(self, kid: str | None, alg: str) -> SigningKey | None:
        keys = self._usable_keys(self._clock())
        if kid is not None:
            return next((k for k in keys if k.kid == kid), None)
        candidates = [k for k in keys if alg in k.algorithms]
        return candidates[0] if len(candidates) == 1 else None

    async def _refresh_if_allowed(self, now: float, *, cooldown: float) -> None:
        inflight = self._inflight
        if inflight is None:
            if now - self._attempted_at < cooldown:
                return
            if now - self._failed_at < self.failure_backoff_seconds:
                return
            inflight = self._inflight = asyncio.ensure_future(self._fetch())
            inflight.add_done_callback(self._fetch_done)
        try:
            # Shielded: a request that goes away must not cancel the fetch others are waiting on.
            await asyncio.shield(inflight)
        except JWKSUnavailableError:
            pass  # logged in _fetch; stale keys (if any) still answer

    def _fetch_done(self, future: asyncio.Future[None]) -> None:
        if self._inflight is future:
            self._inflight = None
        if not future.cancelled():
            future.exception()  # retrieved, so a fetch nobody awaits any more is not reported as lost

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._given_client is not None:
            return self._given_client
        if self._client is None or self._client_loop is not loop:
            # A client is bound to the loop that first used it; a new loop (tests) gets its own.
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_seconds),
                follow_redirects=False,
                headers={"Accept": "application/json", "User-Agent": "agentapi-jwks"},
            )
            self._client_loop = loop
        return self._client

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        self.fetch_count += 1
        try:
            async with self._http().stream("GET", self.url) as response:
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError(f"document larger than {MAX_JWKS_BYTES} bytes")
            keys = parse_jwks(json.loads(body))
            if not keys:
                raise ValueError("no usable signature keys")
        except (httpx.HTTPError, ValueError) as exc:
            self._failed_at = self._clock()
            logger.warning("JWKS fetch from %s failed: %s", self.url, exc)
            raise JWKSUnavailableError(str(exc)) from exc
        self._keys = keys
        self._fetched_at = self._clock()
        logger.info("JWKS fetched from %s: %d key(s) %s", self.url, len(keys), [k.kid for k in keys])
