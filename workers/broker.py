"""Dramatiq's RedisBroker for the four pools, with the middleware every actor gets."""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from events.streams import Names, WorkKind
from schemas.settings import Settings
from workers.actor_metrics import ActorMetrics
from workers.idempotency import Idempotency

QUEUES = [kind.value for kind in WorkKind]
# A worker that stops heartbeating for this long has its un-acked messages requeued elsewhere.
HEARTBEAT_TIMEOUT_MS = 6_000
# Out of a million broker commands, how many also look for dead workers. Dramatiq's default (1,000)
# leaves a dead PTY host's session unclaimed for many minutes; the check itself is one ZRANGEBYSCORE.
MAINTENANCE_CHANCE = 100_000


def make_broker(settings: Settings) -> RedisBroker:
    names = Names(settings.redis_prefix)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    broker = RedisBroker(
        url=settings.redis_url,
        namespace=names.dramatiq_namespace(),
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
        middleware=[
            AgeLimit(),
            TimeLimit(),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            Retries(max_retries=5, min_backoff=1_000, max_backoff=60_000),
            CurrentMessage(),
            AsyncIO(),
            Idempotency(client, names),
            ActorMetrics(client, names),
        ],
    )
    for queue in QUEUES:
        broker.declare_queue(queue)
    dramatiq.set_broker(broker)
    return broker
