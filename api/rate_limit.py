"""Request rate limits per user and per organization, kept in Redis so every ingress process
shares them. GCRA (a token bucket stored as one timestamp per key): a limit of N a minute allows a
burst of N, then one request every 60/N seconds. Unlike fixed windows it has no boundary at which a
client gets 2N, and its answers do not depend on when in the minute a burst begins.

Both limits are checked and charged in one Lua script (one round trip); a refused request charges
neither, so a client retrying too early does not push its own wait further out.
Past a limit the answer is 429 problem+json with ``Retry-After`` (seconds until one more is allowed).
If Redis cannot count, the request goes through: the limits protect capacity, and the endpoints
that need Redis answer 503 by themselves.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from uuid import UUID

from litestar.exceptions import TooManyRequestsException
from litestar.types import Scope
from redis.exceptions import RedisError

from api.auth import Principal
from events.streams import Names

log = logging.getLogger(__name__)

PERIOD_SECONDS = 60
# KEYS: one per limit. ARGV: the period, then each key's limit. Returns {0} when allowed, else
# {the refused key's 1-based index, milliseconds until it allows one more}.
GCRA = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local period = tonumber(ARGV[1]) * 1000
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = period / tonumber(ARGV[i + 1])
  local tat = math.max(tonumber(redis.call('GET', key) or now), now) + interval
  if tat - period > now then
    return {i, math.ceil(tat - period - now)}
  end
  tats[i] = tat
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%d', math.floor(tats[i])), 'PX', math.ceil(tats[i] - now))
end
return {0}
"""


async def check_rate_limits(scope: Scope, principal: Principal) -> None:
    """429 past the principal's user or organization limit (a step of api.after_auth)."""
    try:
        res = scope["app"].state["resources"]
    except KeyError:
        return
    settings = res.settings
    limits = (settings.rate_limit_per_user, settings.rate_limit_per_org)
    keys = _keys(res.names, principal.user_id, principal.org_id)
    try:
        answer = await res.batch.run_script(GCRA, keys, [PERIOD_SECONDS, *limits[: len(keys)]])
    except (RedisError, OSError) as exc:
        log.warning("rate limits not counted (Redis unavailable): %s", exc)
        return
    refused = int(answer[0])
    if refused:
        who = "this user" if refused == 1 else "this organization"
        raise TooManyRequestsException(
            f"more than {limits[refused - 1]} requests a minute from {who}; slow down",
            headers={"Retry-After": str(max(1, math.ceil(int(answer[1]) / 1000)))},
        )


@lru_cache(maxsize=4096)
def _keys(names: Names, user_id: UUID, org_id: UUID | None) -> tuple[str, ...]:
    # Per user and organization once, not two key strings (and two str(UUID)) per request.
    user = names.rate_limit_user(user_id)
    return (user, names.rate_limit_org(org_id)) if org_id else (user,)
