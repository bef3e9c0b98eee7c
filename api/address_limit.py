"""A rate limit for requests without a verified principal, keyed by the client's address.

Requests with a valid token are limited per user and organization (api.rate_limit); before this,
nothing limited bad or missing tokens, nor signed-webhook deliveries. A request that ends without
a principal (a 401, or a public route under ``/api/``) is charged to its address's bucket (GCRA,
``AGENTAPI_RATE_LIMIT_PER_ADDRESS`` a minute); once the bucket is empty every request from that
address without a valid token gets 429 with ``Retry-After`` before anything else runs (the check
peeks, so a valid token is never charged here).

The address is the TCP peer's, unless the peer is one of ``AGENTAPI_TRUSTED_PROXIES``: then it is
the rightmost ``X-Forwarded-For`` entry that is not itself a trusted proxy. Anyone else's
``X-Forwarded-For`` is ignored, so a client cannot pick a fresh address per request.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from typing import NoReturn

from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.types import ASGIApp, Receive, Scope, Send
from redis.exceptions import RedisError

from api.auth import Principal, authorization_header
from api.rate_limit import GCRA, PERIOD_SECONDS
from api.state import Resources
from schemas.settings import Settings

log = logging.getLogger(__name__)

# GCRA without the charge: 0 when one more would be allowed, else milliseconds until it is.
PEEK = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local period = tonumber(ARGV[1]) * 1000
local interval = period / tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) + interval
if tat - period > now then
  return math.ceil(tat - period - now)
end
return 0
"""


def _trusted(address: str, settings: Settings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(entry, strict=False) for entry in settings.trusted_proxies)


def client_address(scope: Scope, settings: Settings) -> str:
    peer = scope.get("client")
    address = peer[0] if peer else "unknown"
    if not settings.trusted_proxies or not _trusted(address, settings):
        return address
    forwarded = [
        value.decode("latin-1") for name, value in scope["headers"] if name.lower() == b"x-forwarded-for"
    ]
    hops = [hop.strip() for line in forwarded for hop in line.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, settings):
            return hop[:64]
    return address


def address_limit_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await app(scope, receive, send)
            return
        res = scope["app"].state["resources"]
        key = res.names.rate_limit_address(client_address(scope, res.settings))
        limit = res.settings.rate_limit_per_address
        # A request with a token is refused here only once its token fails, so its bucket is read
        # only then: one Redis round trip less for every authenticated request.
        if not _has_token(scope):
            wait_ms = await _peek(res, key, limit)
            if wait_ms:
                _refuse(limit, wait_ms)
        try:
            await app(scope, receive, send)
        except NotAuthorizedException:
            # A token that failed verification from an exhausted address: 429, not another 401.
            wait_ms = await _peek(res, key, limit)
            if wait_ms:
                _refuse(limit, wait_ms)
            raise
        finally:
            if not isinstance(scope.get("user"), Principal):
                try:
                    await res.redis.register_script(GCRA)([key], [PERIOD_SECONDS, limit])
                except (RedisError, OSError) as exc:
                    log.warning("address limit not charged (Redis unavailable): %s", exc)

    return middleware


async def _peek(res: Resources, key: str, limit: int) -> int:
    """Milliseconds until the address's bucket allows one more (0: it does now)."""
    try:
        return int(await res.redis.register_script(PEEK)([key], [PERIOD_SECONDS, limit]))
    except (RedisError, OSError) as exc:
        log.warning("address limit not checked (Redis unavailable): %s", exc)
        return 0


def _has_token(scope: Scope) -> bool:
    # A request with a token is refused only once the token fails, so a valid user behind the
    # same address (a NAT, an office) is not locked out by someone else's bad requests.
    return authorization_header(scope) is not None


def _refuse(limit: int, wait_ms: int) -> NoReturn:
    raise TooManyRequestsException(
        f"more than {limit} requests a minute without a valid token from this address; slow down",
        headers={"Retry-After": str(max(1, math.ceil(wait_ms / 1000)))},
    )
