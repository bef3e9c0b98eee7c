"""Moves work-stream events onto Dramatiq queues, at least once: ack only after the enqueue."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Collection
from datetime import datetime

import redis
from dramatiq import Actor, Broker, Message

from events.consumer import PoisonEvent, StreamConsumer
from events.envelope import Event, EventType, utcnow
from events.streams import DISPATCH_GROUP, WORK_ROUTES, Names, WorkKind


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# Dramatiq's Redis broker refuses delays of 7 days or more; later work is handed over in steps.
MAX_DELAY_MS = 7 * 24 * 3600 * 1000 - 60_000


def delay_ms(event: Event) -> int | None:
    """Events carrying ``not_before`` (ISO time) wait on Dramatiq's delay queue until then."""
    raw = event.payload.get("not_before")
    if not raw:
        return None
    try:
        wait = (datetime.fromisoformat(str(raw)) - utcnow()).total_seconds()
    except (TypeError, ValueError) as exc:
        raise PoisonEvent(f"not_before is not an ISO time: {raw!r}") from exc
    return min(max(int(wait * 1000), 0), MAX_DELAY_MS) or None


def enqueuer(broker: Broker, actors: dict[EventType, Actor]):
    def enqueue(event: Event) -> None:
        actor = actors.get(event.type)
        if actor is None:
            raise PoisonEvent(f"no actor handles {event.type}")
        # The message id is the event id, so the idempotency middleware recognises duplicates.
        broker.enqueue(
            Message(
                queue_name=actor.queue_name,
                actor_name=actor.actor_name,
                args=(event.to_wire(),),
                kwargs={},
                options={},
                message_id=event.id,
            ),
            delay=delay_ms(event),
        )

    return enqueue


def dispatchers(
    client: redis.Redis,
    names: Names,
    broker: Broker,
    actors: dict[EventType, Actor],
    kinds: Collection[WorkKind],
    claim_idle_ms: int,
) -> list[StreamConsumer]:
    handler = enqueuer(broker, {t: a for t, a in actors.items() if WORK_ROUTES.get(t) in kinds})
    name = consumer_name()
    return [
        StreamConsumer(
            client, names, names.work(kind), DISPATCH_GROUP, name, handler, claim_idle_ms=claim_idle_ms
        )
        for kind in kinds
    ]
