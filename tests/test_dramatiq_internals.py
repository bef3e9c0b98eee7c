"""The Dramatiq internals this code rests on, each checked against the installed Dramatiq on real Redis.

No Dramatiq API wakes an idle consumer, runs maintenance on every fetch or reports queue depth, so
workers/broker.py and api/metrics.py use internals (and pyproject.toml caps Dramatiq's version).
When an upgrade changes one, a test here fails and its message names the internal.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import dramatiq.brokers.redis
import pytest
import redis
from dramatiq.message import Message

from events.streams import Names
from workers.broker import WakingRedisBroker

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def names() -> Iterator[Names]:
    names = Names(f"internals-test-{secrets.token_hex(4)}:")
    yield names
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(f"{names.prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def broker_for(names: Names, **options: int) -> WakingRedisBroker:
    made = WakingRedisBroker(names, url=REDIS_URL, **options)
    made.declare_queue("q")
    return made


def message(text: str) -> Message[object]:
    return Message(queue_name="q", actor_name="a", args=(text,), kwargs={}, options={})


def test_the_private_consumer_class_and_its_prefetch_bookkeeping(names: Names) -> None:
    assert hasattr(dramatiq.brokers.redis, "_RedisConsumer"), (
        "dramatiq.brokers.redis._RedisConsumer is gone: workers.broker._WakingConsumer subclasses it"
    )
    broker = broker_for(names)
    try:
        consumer = broker.consume("q", prefetch=1, timeout=1_000)
        assert type(consumer).__name__ == "_WakingConsumer", (
            "RedisBroker.consume no longer builds its consumer from the consumer_class property"
        )
        for attribute in (
            "broker",
            "queue_name",
            "prefetch",
            "timeout",
            "message_cache",
            "queued_message_ids",
        ):
            assert hasattr(consumer, attribute), f"_RedisConsumer.{attribute} is gone"
        broker.enqueue(message("one"))
        received = next(consumer) or next(consumer)
        assert received is not None and received.args == ("one",)
        assert consumer.outstanding_message_count == 1, (
            "_RedisConsumer.outstanding_message_count no longer counts queued_message_ids"
        )
        consumer.ack(received)
        assert consumer.outstanding_message_count == 0, (
            "_RedisConsumer.ack no longer discards the message from queued_message_ids"
        )
        consumer.close()
    finally:
        broker.close()


def test_do_fetch_returns_encoded_messages(names: Names) -> None:
    broker = broker_for(names)
    try:
        broker.enqueue(message("two"))
        fetched = broker.do_fetch("q", 5)
        assert isinstance(fetched, list) and len(fetched) == 1, "RedisBroker.do_fetch's reply changed"
        assert Message.decode(fetched[0]).args == ("two",), (
            "RedisBroker.do_fetch no longer returns encoded messages"
        )
    finally:
        broker.close()


def test_every_fetch_runs_the_maintenance_that_requeues_a_dead_workers_messages(names: Names) -> None:
    # Neither broker does maintenance by chance: only the fetch override can bring the message back.
    dead = broker_for(names, heartbeat_timeout=500, maintenance_chance=0)
    alive = broker_for(names, heartbeat_timeout=500, maintenance_chance=0)
    try:
        dead.enqueue(message("three"))
        assert dead.do_fetch("q", 1), "the message was not fetched"
        consumer = alive.consume("q", prefetch=1, timeout=200)
        deadline = time.monotonic() + 15
        received = None
        while received is None and time.monotonic() < deadline:
            received = next(consumer)
        assert received is not None and received.args == ("three",), (
            "a dead worker's message was not requeued by a fetch: RedisBroker._should_do_maintenance "
            "is no longer asked per command (WakingRedisBroker overrides it)"
        )
        consumer.ack(received)
        consumer.close()
    finally:
        dead.close()
        alive.close()


def test_the_redis_layout_the_queue_metrics_read(names: Names) -> None:
    broker = broker_for(names)
    client = redis.Redis.from_url(REDIS_URL)
    layout = "Dramatiq's Redis layout changed; api/metrics.py reads it through events.streams.Names"
    try:
        broker.enqueue(message("ready"))
        broker.enqueue(message("later"), delay=60_000)
        assert client.llen(names.dramatiq_queue("q")) == 1, layout + " (the ready list)"
        assert client.hlen(names.dramatiq_unacked("q")) == 1, layout + " (the unacknowledged hash, .msgs)"
        assert client.hlen(names.dramatiq_delayed("q")) == 1, layout + " (the delay queue's hash, .DQ.msgs)"
        [fetched] = broker.do_fetch("q", 1)
        assert client.llen(names.dramatiq_queue("q")) == 0, layout + " (a fetch leaves the ready list)"
        assert client.hlen(names.dramatiq_unacked("q")) == 1, layout + " (a fetched message stays in .msgs)"
        broker.do_ack("q", Message.decode(fetched).options["redis_message_id"])
        assert client.hlen(names.dramatiq_unacked("q")) == 0, layout + " (an ack removes it from .msgs)"
    finally:
        client.close()
        broker.close()
