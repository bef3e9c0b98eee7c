"""The platform's Redis client: one bounded pool per process, whose callers wait their turn for a
connection instead of failing when a burst (thousands of SSE clients connecting, hundreds of
session hosts heart-beating) wants more connections than the pool holds.

A read that runs out of time on one connection of the process's async clients drops every other
connection the process had opened to the same address before it, in every pool, each at its next
checkout (see ``FreshAfterTimeout``)."""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Mapping
from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from events.packing import lean_packing

POOL_CONNECTIONS = 100
# Maintenance notifications (a Redis Enterprise feature) off for every client: see ``pooled_redis``.
NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)
# When a read from each Redis address last ran out of time in this process (``time.monotonic``).
_timed_out_at: dict[Hashable, float] = {}


def address(options: Mapping[str, Any]) -> Hashable:
    """The path a connection takes to Redis, from a pool's ``connection_kwargs``: its socket's path
    or its host and port (the database is no part of it)."""
    return options.get("path") or (options.get("host"), options.get("port"))


def timed_out(to: Hashable) -> None:
    """A read from Redis at ``to`` ran out of time: every connection to it opened before now is
    presumed dead, and is opened afresh when next taken from its pool."""
    _timed_out_at[to] = time.monotonic()


class FreshAfterTimeout(AbstractConnection):
    """Mixed in ahead of the class redis-py picked for the URL (``_fresh_after_timeout``).

    A silent partition (no FIN, no RST: a NAT entry expired, a server's host gone) leaves every
    connection over it open and mute. Each of them, taken from its pool, cost its caller a socket
    timeout and a failed command before the next dead one was tried: a tools worker lost a gateway
    call to each of its clients in turn (a caller's whole wait each, ~40 s to its first answer).
    The others were opened over the same path and are as dead as the one that timed out, so the
    first timeout drops them all; new connections go through if the path has healed, and fail
    plainly (refused, or a connect timeout) if it has not. A timeout that only a slow Redis caused
    costs each connection one reconnect."""

    # Set in each class ``_fresh_after_timeout`` makes: where its pool's connections go.
    _address: Hashable = None
    _opened_at = -math.inf

    async def connect(self) -> None:
        # The pool's checkout connects every connection it hands out (a no-op on a live one).
        if self.is_connected:
            if self._opened_at >= _timed_out_at.get(self._address, -math.inf):
                return
            # Not waiting for the close: over a dead path it may never finish.
            await self.disconnect(nowait=True)
        await super().connect()

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        # Also reached without ``connect``: a command sent on a connection found closed.
        opening = not self.is_connected
        await super().connect_check_health(check_health, retry_socket_connect)
        if opening:
            self._opened_at = time.monotonic()

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except RedisTimeoutError:
            timed_out(self._address)
            raise


def _fresh_after_timeout(pool: ConnectionPool) -> None:
    base = pool.connection_class
    pool.connection_class = type(
        f"Fresh{base.__name__}", (FreshAfterTimeout, base), {"_address": address(pool.connection_kwargs)}
    )


def pooled_redis(url: str, *, wait_seconds: float, **options: Any) -> Redis:
    """A client whose commands wait up to ``wait_seconds`` for a free connection, then raise
    ``redis.ConnectionError`` (an outage to the caller: 503 in the ingress, a retry in a worker).

    Maintenance notifications (a Redis Enterprise feature) are off: while they may be on (redis-py's
    default, "auto"), a pool hands out its idle connections without looking for the server's close,
    and after a Redis restart each one failed the command it was next given (a session host's first
    emit, so its session lost its prompt)."""
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        max_connections=POOL_CONNECTIONS,
        timeout=wait_seconds,
        maint_notifications_config=NO_MAINT_NOTIFICATIONS,
        **options,
    )
    _fresh_after_timeout(pool)
    return Redis(connection_pool=pool)


def batch_redis(url: str, *, wait_seconds: float, **options: Any) -> Redis:
    """A pooled client for ``events.batch.RedisBatch``: no per-reply socket timeout (the batch
    bounds each pipeline as a whole), connecting within ``wait_seconds``; commands are packed by
    ``events.packing``."""
    client = pooled_redis(
        url, wait_seconds=wait_seconds, socket_timeout=None, socket_connect_timeout=wait_seconds, **options
    )
    pool = client.connection_pool
    pool.connection_class = lean_packing(pool.connection_class)
    return client


def dedicated_redis(url: str, **options: Any) -> Redis:
    """A client with an unbounded pool of its own, for a read that blocks on its connection (a worker's
    input streams, a loop reader), decoding to ``str``. Maintenance notifications are off as in
    ``pooled_redis``: while they may be on, its first command after a Redis restart failed."""
    pool = ConnectionPool.from_url(
        url, decode_responses=True, maint_notifications_config=NO_MAINT_NOTIFICATIONS, **options
    )
    _fresh_after_timeout(pool)
    return Redis.from_pool(pool)


def thread_redis(url: str, **options: Any) -> redis.Redis:
    """A blocking client, for threads (dispatchers, Dramatiq's broker and its middleware), with
    maintenance notifications off as in ``pooled_redis``."""
    return redis.Redis.from_url(url, maint_notifications_config=NO_MAINT_NOTIFICATIONS, **options)
