"""Dramatiq's RedisBroker for the four pools, with the middleware every actor gets.

Two parts rest on Dramatiq internals for want of an API: the consumer that waits for a wake-up
(``_RedisConsumer``, its prefetch bookkeeping and ``do_fetch``) and the maintenance on every fetch
(``RedisBroker._should_do_maintenance``). pyproject.toml pins Dramatiq to the minor version they
were written for, and tests/test_dramatiq_internals.py fails naming the internal that changed.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import redis
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from events.connection import thread_redis
from events.streams import Names, WorkKind
from schemas.settings import Settings
from workers.actor_metrics import ActorMetrics
from workers.event_context import EventContext
from workers.idempotency import Idempotency

QUEUES = [kind.value for kind in WorkKind]
# A worker that stops heartbeating for this long has its un-acked messages requeued elsewhere. Every
# consumer heartbeats at least once a worker timeout (IDLE_POLL_MS, 1 s), so 6 s is five missed beats.
HEARTBEAT_TIMEOUT_MS = 6_000
# Out of a million other broker commands, how many also look for dead workers (every fetch does, see
# WakingRedisBroker); the check itself is one ZRANGEBYSCORE while no worker is dead.
MAINTENANCE_CHANCE = 100_000


# How often a consumer holding all its prefetch looks for a finished message.
FULL_POLL_SECONDS = 0.005
# Wake-up tokens kept per queue: enough for every idle consumer, bounded when none listens.
WAKE_TOKENS = 64
WAKE_TTL_SECONDS = 60


class WakeOnEnqueue(Middleware):
    """Every enqueue (a delayed one on its delay queue) pushes a token on the queue's wake list."""

    def __init__(self, client: redis.Redis, names: Names) -> None:
        self.client = client
        self.names = names

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        key = self.names.dramatiq_wake(message.queue_name)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, WAKE_TOKENS - 1)
            pipe.expire(key, WAKE_TTL_SECONDS)
            pipe.execute()


class WakingRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, but an idle consumer waits for work instead of polling for it.

    Dramatiq's consumer sleeps between fetches of an empty queue (growing up to the worker
    timeout), so a message waits on average half a sleep before anyone looks: milliseconds an
    agent's tool call pays every time, up to a second for the pools that poll slowly. Here every
    enqueue also pushes a token on the queue's wake list (``WakeOnEnqueue``), and an idle consumer
    blocks on that list (at most the worker timeout, so it still heartbeats through its fetches,
    handles delayed messages and notices a stop)."""

    def __init__(self, names: Names, *, middleware: list[Middleware] | None = None, **options: Any) -> None:
        super().__init__(namespace=names.dramatiq_namespace(), middleware=middleware, **options)
        self.names = names
        self.add_middleware(WakeOnEnqueue(self.client, names))

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def _should_do_maintenance(self, command: str) -> int:
        """Every fetch looks for dead workers: idle consumers fetch once a worker timeout, so a killed
        PTY host's session is requeued within about a second of its heartbeat lapsing. By chance
        (Dramatiq's way) it took ~10 fetches more on average: 14-15 s to recover a session."""
        return 1 if command == "fetch" else super()._should_do_maintenance(command)


class _WakingConsumer(_RedisConsumer):
    broker: WakingRedisBroker

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    message = Message.decode(self.message_cache.pop(0))
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                room = self.prefetch - self.outstanding_message_count
                if room <= 0:
                    # Busy with all it may hold: leave the wake-ups to consumers that have room, but
                    # heartbeat (a fetch of nothing), or the busiest workers would look dead and lose
                    # their messages to the others; then look again as soon as a worker thread acks
                    # one. One sleep of the whole worker timeout here idled a saturated pool for up
                    # to a second after every batch.
                    self.broker.do_fetch(self.queue_name, 0)
                    deadline = time.monotonic() + self.timeout / 1000
                    while self.prefetch <= self.outstanding_message_count and time.monotonic() < deadline:
                        time.sleep(FULL_POLL_SECONDS)
                    return None
                self.message_cache = self.broker.do_fetch(self.queue_name, room)
                if self.message_cache:
                    continue
                # A timeout of 0 would block for good.
                self.broker.client.blpop(
                    [self.broker.names.dramatiq_wake(self.queue_name)], max(self.timeout, 1) / 1000
                )
                return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None


def make_broker(settings: Settings) -> RedisBroker:
    names = Names(settings.redis_prefix)
    client = thread_redis(settings.redis_url, decode_responses=True)
    broker = WakingRedisBroker(
        names,
        # Dramatiq's own client answers bytes, as its scripts' callers expect.
        client=thread_redis(settings.redis_url),
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
            # Before Idempotency, so its log lines about an event carry the event's correlation id.
            EventContext(),
            # Before Idempotency too: a duplicate it skips is still timed, with the outcome "skipped".
            ActorMetrics(client, names),
            Idempotency(client, names),
        ],
    )
    for queue in QUEUES:
        broker.declare_queue(queue)
    dramatiq.set_broker(broker)
    return broker
