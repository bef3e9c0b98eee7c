"""Request rate limits per user and per organization, counted in Redis so every ingress process
shares them. Fixed one-minute windows: simple, and two Redis commands per request.

Past a limit the answer is 429 problem+json with ``Retry-After`` (seconds to the next window).
If Redis cannot count, the request goes through: the limits protect capacity, and the endpoints
that need Redis answer 503 by themselves.
"""

from __future__ import annotations

import logging
import time

from litestar.exceptions import TooManyRequestsException
from litestar.types import ASGIApp, Receive, Scope, Send
from redis.exceptions import RedisError

from api.auth import Principal

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60


def rate_limit_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("user")
        if scope["type"] == "http" and isinstance(principal, Principal):
            await _check(scope, principal)
        await app(scope, receive, send)

    return middleware


async def _check(scope: Scope, principal: Principal) -> None:
    try:
        res = scope["app"].state["resources"]
    except KeyError:
        return
    settings = res.settings
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    retry_after = str(max(1, int((window + 1) * WINDOW_SECONDS - now)))
    user_key = f"{res.names.prefix}rl:user:{principal.user_id}:{window}"
    org_key = f"{res.names.prefix}rl:org:{principal.org_id}:{window}" if principal.org_id else None
    try:
        async with res.redis.pipeline(transaction=False) as pipe:
            pipe.incr(user_key)
            pipe.expire(user_key, WINDOW_SECONDS * 2)
            if org_key:
                pipe.incr(org_key)
                pipe.expire(org_key, WINDOW_SECONDS * 2)
            counts = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("rate limits not counted (Redis unavailable): %s", exc)
        return
    if int(counts[0]) > settings.rate_limit_per_user:
        raise TooManyRequestsException(
            f"more than {settings.rate_limit_per_user} requests a minute from this user; slow down",
            headers={"Retry-After": retry_after},
        )
    if org_key and int(counts[2]) > settings.rate_limit_per_org:
        raise TooManyRequestsException(
            f"more than {settings.rate_limit_per_org} requests a minute from this organization; slow down",
            headers={"Retry-After": retry_after},
        )
