"""A circuit breaker per MCP server, kept in Redis so every tools worker sees the same state.

Closed: calls go through; each unavailability (connection failure, timeout) counts, a success
resets the count. After ``threshold`` failures in a row it opens: calls fail at once, without
touching the server, for ``reset_seconds``. Then one trial call is let through (half-open): its
success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import time
from uuid import UUID

from redis.asyncio import Redis

from events.streams import Names


class CircuitOpen(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(
            f"the MCP server is failing; calls are paused for {retry_after:.0f} s (circuit open)"
        )
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(self, redis: Redis, names: Names, threshold: int, reset_seconds: float) -> None:
        self.redis, self.names = redis, names
        self.threshold, self.reset_seconds = threshold, reset_seconds

    async def before_call(self, config_id: UUID) -> bool:
        """Raises CircuitOpen while the breaker is open; lets one trial through once it may close.
        Returns whether the server had any breaker state (failures counted, or a trial): only then
        does a success need recording, which keeps a healthy server's calls at one round trip."""
        key = self.names.breaker(config_id)
        state = await self.redis.hgetall(key)
        if not state:
            return False
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
        failures = int(await self.redis.hincrby(key, "failures", 1))
        half_open_trial = await self.redis.hexists(key, "trial")
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
