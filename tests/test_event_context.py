"""The EventContext middleware, in a real Dramatiq worker: every envelope actor, async or not, sees
its event and its correlation id, and nothing of it outlives the message."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, Retries

from events.envelope import Event, EventType
from services.observability import correlation_id
from workers.event_context import EventContext, current_event

ORG = uuid.UUID("6f1c0c1e-0000-4000-8000-000000000002")


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    broker = StubBroker(middleware=[Retries(), AsyncIO(), EventContext()])
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    worker = Worker(broker, worker_threads=1)
    worker.start()
    try:
        yield broker
    finally:
        worker.stop()
        broker.close()


def test_every_envelope_actor_sees_its_event_and_correlation_id(broker: StubBroker) -> None:
    seen: list[tuple[str, Event | None, str | None]] = []

    @dramatiq.actor(queue_name="q", envelope=True, max_retries=0)
    async def async_actor(envelope: str) -> None:
        seen.append(("async", current_event(), correlation_id.get()))

    @dramatiq.actor(queue_name="q", envelope=True, max_retries=0)
    def sync_actor(envelope: str) -> None:
        seen.append(("sync", current_event(), correlation_id.get()))

    @dramatiq.actor(queue_name="q", max_retries=0)
    def plain_actor(value: str) -> None:
        with pytest.raises(RuntimeError, match="envelope=True"):
            current_event()
        seen.append(("plain", None, correlation_id.get()))

    first = Event(type=EventType.TOOL_CALL_REQUESTED, org_id=ORG, user_id=None, correlation_id="corr-1")
    second = Event(type=EventType.USER_ERASED, org_id=ORG, user_id=None, correlation_id="corr-2")
    async_actor.send(first.to_wire())
    broker.join("q")
    sync_actor.send(second.to_wire())
    broker.join("q")
    plain_actor.send("not an envelope")
    broker.join("q")
    assert seen == [("async", first, "corr-1"), ("sync", second, "corr-2"), ("plain", None, None)]


def test_a_message_without_an_envelope_goes_to_the_dead_letters_without_running(broker: StubBroker) -> None:
    ran: list[str] = []

    @dramatiq.actor(queue_name="bad", envelope=True, max_retries=0)
    def actor(envelope: str) -> None:
        ran.append(envelope)

    actor.send('{"type": "no.such.type"}')
    broker.join("bad", fail_fast=False)
    assert ran == []
    assert len(broker.dead_letters_by_queue["bad"]) == 1
