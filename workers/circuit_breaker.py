"""A circuit breaker per MCP server, kept in Redis so every tools worker sees the same state.

Closed: calls go through; each unavailability (connection failure, timeout) counts, a success
resets the count. After ``threshold`` failures in a row it opens: calls fail at once, without
touching the server, for ``reset_seconds``. Then one trial call is let through (half-open): its
success closes the breaker, its failure opens it again.

Reading the breaker before every call was a Redis round trip on the call's path, an eighth of the
tools worker's event loop per gateway call. A server with no breaker state (the healthy case, the
only one kept) is remembered per worker for ``HEALTHY_SECONDS``, and only while the worker is
subscribed to ``Names.breaker_changes`` (events/invalidations.py): the first failure any worker
records is published with its count, in the same round trip, and every worker reads the state
afresh from then on. What no message reaches (one lost while the subscription looked healthy) lets
a worker go on calling a server others found failing for at most that long.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from uuid import UUID

from redis.asyncio import Redis

from events.invalidations import Invalidations
from events.streams import Names

# How long a worker trusts that a server it read had no breaker state.
HEALTHY_SECONDS = 1.0
# Servers remembered per worker; beyond this the oldest go first.
CACHE_ENTRIES = 4096


class CircuitOpen(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(
            f"the MCP server is failing; calls are paused for {retry_after:.0f} s (circuit open)"
        )
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(
        self,
        redis: Redis,
        names: Names,
        threshold: int,
        reset_seconds: float,
        healthy_seconds: float = HEALTHY_SECONDS,
    ) -> None:
        self.redis, self.names = redis, names
        self.threshold, self.reset_seconds = threshold, reset_seconds
        self.healthy_seconds = healthy_seconds
        # Servers read without breaker state, by configuration id: until when that is trusted.
        self._healthy: OrderedDict[str, float] = OrderedDict()
        self._changes = Invalidations(
            redis,
            names.breaker_changes(),
            lambda config: self._healthy.pop(config, None),
            self._healthy.clear,
        )

    @property
    def caching(self) -> bool:
        """Whether changes reach this worker, so that a healthy server's state may be reused."""
        return self._changes.live

    @property
    def epoch(self) -> int:
        """Counts the changes heard and the subscription's changes."""
        return self._changes.epoch

    async def stop(self) -> None:
        await self._changes.stop()

    async def before_call(self, config_id: UUID) -> bool:
        """Raises CircuitOpen while the breaker is open; lets one trial through once it may close.
        Returns whether the server had any breaker state (failures counted, or a trial): only then
        does a success need recording, which keeps a healthy server's calls without a write."""
        self._changes.start()
        config, now = str(config_id), time.monotonic()
        if self.caching and self._healthy.get(config, 0.0) > now:
            return False
        key = self.names.breaker(config_id)
        epoch = self._changes.epoch
        state = await self.redis.hgetall(key)
        if not state:
            if self.caching and self._changes.epoch == epoch:
                # Timed from before the read: Redis had no state for it no later than that.
                self._healthy[config] = now + self.healthy_seconds
                self._healthy.move_to_end(config)
                while len(self._healthy) > CACHE_ENTRIES:
                    self._healthy.popitem(last=False)
            return False
        self._healthy.pop(config, None)
        open_until = state.get("open_until")
        if open_until is None:
            return True
        now = time.time()
        if now < float(open_until):
            raise CircuitOpen(float(open_until) - now)
        if not await self.redis.hsetnx(key, "trial", str(now)):
            raise CircuitOpen(1.0)
        return True

    async def record_success(self, config_id: UUID) -> None:
        await self.redis.delete(self.names.breaker(config_id))

    async def record_failure(self, config_id: UUID) -> bool:
        """Count a failure; returns True when this one opened the breaker."""
        key = self.names.breaker(config_id)
        self._healthy.pop(str(config_id), None)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, "failures", 1)
            pipe.hexists(key, "trial")
            # After the count: a worker that hears this and reads again finds it.
            pipe.publish(self.names.breaker_changes(), str(config_id))
            counted, half_open_trial, _ = await pipe.execute()
        failures = int(counted)
        if failures >= self.threshold or half_open_trial:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"open_until": str(time.time() + self.reset_seconds), "failures": "0"})
                pipe.hdel(key, "trial")
                pipe.expire(key, int(self.reset_seconds * 10) + 60)
                await pipe.execute()
            return True
        await self.redis.expire(key, int(self.reset_seconds * 10) + 60)
        return False

    async def state(self, config_id: UUID) -> str:
        open_until = await self.redis.hget(self.names.breaker(config_id), "open_until")
        if open_until is None:
            return "closed"
        return "open" if time.time() < float(open_until) else "half_open"
