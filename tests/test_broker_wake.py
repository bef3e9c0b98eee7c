"""The broker's idle consumers wait on a wake list that every enqueue pushes to, on real Redis."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator

import pytest
import redis
from dramatiq.message import Message

from events.streams import Names
from workers.broker import WAKE_TOKENS, WakingRedisBroker

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def broker() -> Iterator[WakingRedisBroker]:
    made = WakingRedisBroker(Names(f"wake-test-{secrets.token_hex(4)}:"), url=REDIS_URL)
    made.declare_queue("q")
    yield made
    made.flush_all()
    made.client.delete(made.names.dramatiq_wake("q"))
    made.close()


def message(text: str) -> Message:
    return Message(queue_name="q", actor_name="a", args=(text,), kwargs={}, options={})


@pytest.mark.timeout(30)
def test_an_idle_consumer_is_woken_by_an_enqueue(broker: WakingRedisBroker) -> None:
    # A consumer whose idle wait is a minute: only the wake-up can hand it the message in time.
    consumer = broker.consume("q", prefetch=1, timeout=60_000)
    threading.Timer(0.5, lambda: broker.enqueue(message("hello"))).start()
    # Nothing is queued yet: an empty fetch, then the wait that the enqueue ends; the next call
    # fetches the message.
    received = next(consumer) or next(consumer)
    assert received.args == ("hello",)
    consumer.ack(received)
    consumer.close()


def test_wake_tokens_are_bounded_when_nobody_listens(broker: WakingRedisBroker) -> None:
    for number in range(WAKE_TOKENS + 10):
        broker.enqueue(message(str(number)))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.llen(broker.names.dramatiq_wake("q")) == WAKE_TOKENS
        assert 0 < client.ttl(broker.names.dramatiq_wake("q")) <= 60
    finally:
        client.close()
