"""The circuit breaker's healthy servers remembered per tools worker (workers/circuit_breaker.py),
over real Redis: two ``CircuitBreaker`` stand for two workers. A failure one records reaches the
other at once; a lost subscription stops the remembering; what no message reaches lives no longer
than the cache's TTL."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio import Redis

from events.streams import Names
from tests.pubsub_faults import cut_subscriptions
from tests.waiting import until
from workers.circuit_breaker import CircuitBreaker, CircuitOpen

# Long enough that only a message (or a lost subscription) can explain a change in a test.
FOREVER = 300.0


@asynccontextmanager
async def worker(client: Any, names: Names, seconds: float = FOREVER) -> AsyncIterator[CircuitBreaker]:
    breaker = CircuitBreaker(client, names, threshold=1, reset_seconds=FOREVER, healthy_seconds=seconds)
    try:
        assert await breaker.before_call(uuid.uuid4()) is False  # starts the subscription
        await until(lambda: breaker.caching, timeout=10, what="subscribed to breaker changes")
        yield breaker
    finally:
        await breaker.stop()


async def open_silently(aredis: Redis, names: Names, config: uuid.UUID) -> None:
    """The breaker's state written without a message, as by a publish that was lost."""
    await aredis.hset(names.breaker(config), mapping={"open_until": str(time.time() + FOREVER)})


async def refuses(breaker: CircuitBreaker, config: uuid.UUID) -> bool:
    try:
        await breaker.before_call(config)
    except CircuitOpen:
        return True
    return False


async def test_a_failure_one_worker_records_reaches_every_worker_at_once(
    aredis: Redis, redis_url: str, names: Names
) -> None:
    config = uuid.uuid4()
    other = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with worker(aredis, names) as first, worker(other, names) as second:
            assert await first.before_call(config) is False
            await open_silently(aredis, names, config)
            # Nothing said so: the first still trusts what it read.
            assert await first.before_call(config) is False
            await aredis.delete(names.breaker(config))
            assert await second.record_failure(config)  # the threshold is 1: it opens
            await until(lambda: refuses(first, config), timeout=10, what="the first worker refused")
            with pytest.raises(CircuitOpen):
                await second.before_call(config)
    finally:
        await other.aclose()


async def test_a_state_no_message_reaches_is_read_after_the_cache_ttl(aredis: Redis, names: Names) -> None:
    config = uuid.uuid4()
    async with worker(aredis, names, seconds=0.2) as breaker:
        assert await breaker.before_call(config) is False
        await open_silently(aredis, names, config)
        await until(lambda: refuses(breaker, config), timeout=10, what="the breaker read the state again")


async def test_a_lost_subscription_stops_the_remembering(redis_url: str, aredis: Redis, names: Names) -> None:
    name = f"breaker-test-{uuid.uuid4().hex[:8]}"
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True, client_name=name)
    config = uuid.uuid4()
    try:
        async with worker(client, names) as breaker:
            assert await breaker.before_call(config) is False
            # Opened while the subscription is down: its message never arrives.
            await open_silently(aredis, names, config)
            await cut_subscriptions(aredis, name)
            await until(lambda: refuses(breaker, config), timeout=10, what="the breaker read the state again")
            await until(lambda: breaker.caching, timeout=10, what="subscribed again")
    finally:
        await client.aclose()


class FailureDuringRead:
    """A client whose HGETALL is answered (no state), then another worker's failure recorded and
    heard before the answer reaches the caller: the ordering a busy worker can see."""

    def __init__(
        self, client: Redis, names: Names, other: CircuitBreaker, heard: list[CircuitBreaker]
    ) -> None:
        self._client, self._names, self._other, self._heard = client, names, other, heard

    def pubsub(self) -> Any:
        return self._client.pubsub()

    async def hgetall(self, key: str) -> Any:
        answer = await self._client.hgetall(key)
        if self._heard:
            breaker = self._heard[0]
            before = breaker.epoch
            await self._other.record_failure(uuid.UUID(key.split(":")[-2]))
            await until(lambda: breaker.epoch != before, timeout=10, what="the failure was heard")
        return answer


async def test_a_read_that_raced_a_failure_is_not_kept(aredis: Redis, names: Names) -> None:
    config = uuid.uuid4()
    heard: list[CircuitBreaker] = []
    async with worker(aredis, names) as other:
        async with worker(FailureDuringRead(aredis, names, other, heard), names) as breaker:
            heard.append(breaker)
            assert await breaker.before_call(config) is False  # Redis had no state when it read
            heard.clear()
            with pytest.raises(CircuitOpen):
                await breaker.before_call(config)
