"""The platform's Redis client: one bounded pool per process, whose callers wait their turn for a
connection instead of failing when a burst (thousands of SSE clients connecting, hundreds of
session hosts heart-beating) wants more connections than the pool holds."""

from __future__ import annotations

from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.maint_notifications import MaintNotificationsConfig

from events.packing import lean_packing

POOL_CONNECTIONS = 100
# Maintenance notifications (a Redis Enterprise feature) off for every client: see ``pooled_redis``.
NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)


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
    return Redis.from_url(
        url, decode_responses=True, maint_notifications_config=NO_MAINT_NOTIFICATIONS, **options
    )


def thread_redis(url: str, **options: Any) -> redis.Redis:
    """A blocking client, for threads (dispatchers, Dramatiq's broker and its middleware), with
    maintenance notifications off as in ``pooled_redis``."""
    return redis.Redis.from_url(url, maint_notifications_config=NO_MAINT_NOTIFICATIONS, **options)
