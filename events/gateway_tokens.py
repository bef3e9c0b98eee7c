"""Session gateway tokens in Redis: issued and revoked by the session's host, checked by the ingress.

Redis keeps a token's holder (JSON) under its digest (``Names.gateway_token``) while the host
heartbeats. A host that ends the session deletes it and publishes the digest on
``Names.gateway_revocations``, in one round trip, the delete first.

The ingress checks a token on every gateway request (an agent's every tool call), and a Redis GET
per request was a sixth of its work per call. ``GatewayTokens`` keeps what it read for a second
(``AGENTAPI_MCP_GATEWAY_TOKEN_CACHE_SECONDS``), and only while its subscription to the revocations
is confirmed (events/invalidations.py): a revocation drops the digest at once; a lost connection
empties the cache and turns it off until subscribed again. What no revocation reaches is bounded
by that TTL: a revocation lost while the subscription looked healthy, a host that died (its key
expires without a message), a publish that failed after the delete. Each leaves a token usable for at most that long after its key is gone,
in the ingress processes that had cached it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from uuid import UUID

from redis.asyncio import Redis

from events.invalidations import Invalidations
from events.streams import Names, secret_digest

# Tokens kept per process (live sessions calling through it); beyond this the oldest go first.
CACHE_ENTRIES = 4096


@dataclass(frozen=True)
class TokenHolder:
    """Whom a gateway token was issued to."""

    session_id: str
    org_id: UUID
    user_id: UUID


async def issue(redis: Redis, names: Names, holder: TokenHolder, ttl_seconds: int) -> tuple[str, str]:
    """A fresh token for ``holder`` and its digest (what its key and revocation name)."""
    token = secrets.token_urlsafe(32)
    digest = secret_digest(token)
    await redis.set(names.gateway_token(digest), _entry(holder), ex=ttl_seconds)
    return token, digest


async def restore(redis: Redis, names: Names, holder: TokenHolder, digest: str, ttl_seconds: int) -> None:
    """Write the token's key again (if it is still missing) for a host whose heartbeat found it gone:
    Redis came back empty, or was down past the key's TTL. The token itself never left the agent;
    without its key every gateway call of a live session would be refused until the session ended.
    Only a live host calls this, and a host revokes after its heartbeat has stopped."""
    await redis.set(names.gateway_token(digest), _entry(holder), ex=ttl_seconds, nx=True)


def _entry(holder: TokenHolder) -> str:
    return json.dumps(
        {"session_id": holder.session_id, "org_id": str(holder.org_id), "user_id": str(holder.user_id)}
    )


async def revoke(redis: Redis, names: Names, digest: str) -> None:
    """Delete the token, then tell every ingress process to forget it (in one round trip: Redis runs
    a pipeline's commands in order, so no process can read the token again after the notice)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(names.gateway_token(digest))
        pipe.publish(names.gateway_revocations(), digest)
        await pipe.execute()


class GatewayTokens:
    """Gateway token lookups for one ingress process, cached while revocations can reach it."""

    def __init__(self, redis: Redis, names: Names, seconds: float) -> None:
        self._redis = redis
        self._names = names
        self._seconds = seconds
        self._entries: OrderedDict[str, tuple[float, TokenHolder]] = OrderedDict()
        self._revocations = Invalidations(
            redis,
            names.gateway_revocations(),
            lambda digest: self._entries.pop(digest, None),
            self._entries.clear,
        )

    async def start(self) -> None:
        self._revocations.start()

    async def stop(self) -> None:
        await self._revocations.stop()

    @property
    def caching(self) -> bool:
        """Whether revocations reach this process, so that what it read may be reused."""
        return self._revocations.live and self._seconds > 0

    @property
    def epoch(self) -> int:
        """Counts the revocations heard and the subscription's changes."""
        return self._revocations.epoch

    async def holder(self, token: str) -> TokenHolder | None:
        """Whom ``token`` was issued to while it is valid, else None."""
        digest = secret_digest(token)
        now = time.monotonic()
        if self.caching:
            cached = self._entries.get(digest)
            if cached is not None and cached[0] > now:
                return cached[1]
        epoch = self.epoch
        raw = await self._redis.get(self._names.gateway_token(digest))
        if not raw:
            return None
        entry = json.loads(raw)
        holder = TokenHolder(entry["session_id"], UUID(entry["org_id"]), UUID(entry["user_id"]))
        if self.caching and self.epoch == epoch:
            # Timed from before the read: Redis vouched for the token no later than that.
            self._entries[digest] = (now + self._seconds, holder)
            self._entries.move_to_end(digest)
            while len(self._entries) > CACHE_ENTRIES:
                self._entries.popitem(last=False)
        return holder
