"""Gateway tokens cached per ingress process (events/gateway_tokens.py), over real Redis: two
``GatewayTokens`` stand for two ingress processes. A revocation reaches every process at once; a
lost subscription empties the cache; a lookup that raced a revocation is not kept; and what no
revocation reaches lives no longer than the cache's TTL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
from redis.asyncio import Redis

from events import gateway_tokens
from events.gateway_tokens import GatewayTokens, TokenHolder
from events.streams import Names, secret_digest
from tests.pubsub_faults import cut_subscriptions
from tests.waiting import until

# Long enough that only a revocation (or a lost subscription) can explain a refusal in a test.
FOREVER = 300.0


@asynccontextmanager
async def ingress(client: Any, names: Names, seconds: float = FOREVER) -> AsyncIterator[GatewayTokens]:
    tokens = GatewayTokens(client, names, seconds)
    await tokens.start()
    try:
        await until(lambda: tokens.caching, timeout=10, what="subscribed to revocations")
        yield tokens
    finally:
        await tokens.stop()


async def issued(aredis: Redis, names: Names) -> tuple[str, TokenHolder]:
    holder = TokenHolder(str(uuid.uuid4()), uuid.uuid4(), uuid.uuid4())
    token, _ = await gateway_tokens.issue(aredis, names, holder, 60)
    return token, holder


async def refused(tokens: GatewayTokens, token: str) -> bool:
    return await tokens.holder(token) is None


async def test_a_revoked_token_is_refused_at_once_by_every_ingress(
    aredis: Redis, redis_url: str, names: Names
) -> None:
    token, holder = await issued(aredis, names)
    other = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with ingress(aredis, names) as first, ingress(other, names) as second:
            assert await first.holder(token) == holder and await second.holder(token) == holder
            # Gone from Redis without a word: both still answer from what they read.
            await aredis.delete(names.gateway_token(secret_digest(token)))
            assert await first.holder(token) == holder and await second.holder(token) == holder
            await gateway_tokens.revoke(aredis, names, secret_digest(token))
            await until(lambda: refused(first, token), timeout=10, what="the first ingress refused it")
            await until(lambda: refused(second, token), timeout=10, what="the second ingress refused it")
    finally:
        await other.aclose()


async def test_a_token_no_revocation_reaches_lives_only_the_cache_ttl(aredis: Redis, names: Names) -> None:
    token, holder = await issued(aredis, names)
    async with ingress(aredis, names, seconds=0.2) as tokens:
        assert await tokens.holder(token) == holder
        await aredis.delete(names.gateway_token(secret_digest(token)))  # the host died: no message
        await until(lambda: refused(tokens, token), timeout=10, what="the cached token expired")


async def test_a_lost_subscription_empties_the_cache(redis_url: str, aredis: Redis, names: Names) -> None:
    name = f"gateway-tokens-test-{uuid.uuid4().hex[:8]}"
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True, client_name=name)
    token, holder = await issued(aredis, names)
    try:
        async with ingress(client, names) as tokens:
            assert await tokens.holder(token) == holder
            # The token is revoked while the subscription is down: its message never arrives.
            await aredis.delete(names.gateway_token(secret_digest(token)))
            await cut_subscriptions(aredis, name)
            await until(lambda: refused(tokens, token), timeout=10, what="the cache was emptied")
            await until(lambda: tokens.caching, timeout=10, what="subscribed again")
    finally:
        await client.aclose()


class RevokedDuringGet:
    """A client whose GET is answered, then the token revoked (and the revocation heard by the
    ingress) before the answer reaches the caller: the ordering a busy ingress can see."""

    def __init__(self, client: Redis, names: Names, heard: Callable[[], int]) -> None:
        self._client, self._names, self._heard = client, names, heard

    def pubsub(self) -> Any:
        return self._client.pubsub()

    async def get(self, key: str) -> Any:
        answer = await self._client.get(key)
        before = self._heard()
        await gateway_tokens.revoke(self._client, self._names, key.rsplit(":", 1)[1])
        await until(lambda: self._heard() != before, timeout=10, what="the revocation was heard")
        return answer


async def test_a_lookup_that_raced_a_revocation_is_not_kept(aredis: Redis, names: Names) -> None:
    token, holder = await issued(aredis, names)
    started: list[GatewayTokens] = []
    racing = RevokedDuringGet(aredis, names, lambda: started[0].epoch if started else 0)
    async with ingress(racing, names) as tokens:
        started.append(tokens)
        assert await tokens.holder(token) == holder  # Redis vouched for it before the revocation
        assert await tokens.holder(token) is None


async def test_a_live_hosts_token_key_written_again_after_redis_lost_it(aredis: Redis, names: Names) -> None:
    """What a session's host does when its heartbeat finds the key gone (Redis came back empty): the
    token it gave its agent is valid again, for the same holder; a key that is there is left alone."""
    token, holder = await issued(aredis, names)
    digest = secret_digest(token)
    await aredis.delete(names.gateway_token(digest))
    async with ingress(aredis, names) as tokens:
        assert await refused(tokens, token)
        await gateway_tokens.restore(aredis, names, holder, digest, 60)
        assert await tokens.holder(token) == holder
    kept = await aredis.get(names.gateway_token(digest))
    await gateway_tokens.restore(
        aredis, names, TokenHolder(str(uuid.uuid4()), uuid.uuid4(), uuid.uuid4()), digest, 60
    )
    assert await aredis.get(names.gateway_token(digest)) == kept
