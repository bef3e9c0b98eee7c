"""Consumer groups on the real Redis: ack after success, reclaim, dead letters."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from events.consumer import PoisonEvent, StreamConsumer
from events.envelope import Event, EventType
from events.publisher import work_stream
from events.streams import DISPATCH_GROUP, FIELD, Names, WorkKind


def session_event() -> Event:
    return Event(
        type=EventType.SESSION_REQUESTED, org_id=uuid.uuid4(), user_id=uuid.uuid4(), session_id=uuid.uuid4()
    )


def consumer(client: redis.Redis, names: Names, handler, name: str = "c1", **kw) -> StreamConsumer:  # type: ignore[no-untyped-def]
    c = StreamConsumer(
        client, names, names.work(WorkKind.SESSIONS), DISPATCH_GROUP, name, handler, block_ms=10, **kw
    )
    c.ensure_group()
    return c


def test_envelope_round_trip_and_routing(names: Names) -> None:
    event = session_event()
    assert Event.from_wire(event.to_wire()) == event
    assert work_stream(names, event) == names.work(WorkKind.SESSIONS)
    follow = event.follow_up(EventType.MESSAGE_COMPLETED, {"content": "x"})
    assert (follow.session_id, follow.correlation_id) == (event.session_id, event.correlation_id)
    assert follow.id > event.id, "ids sort by time"
    with pytest.raises(ValueError, match="result"):
        work_stream(names, follow)


def test_success_is_acked_once(sync_redis: redis.Redis, names: Names) -> None:
    seen: list[str] = []
    c = consumer(sync_redis, names, lambda e: seen.append(e.id))
    event = session_event()
    sync_redis.xadd(c.stream, {FIELD: event.to_wire()})
    assert c.poll_once() == 1
    assert seen == [event.id]
    assert sync_redis.xpending(c.stream, c.group)["pending"] == 0
    assert c.poll_once() == 0


def test_malformed_entry_goes_to_dead_letter(sync_redis: redis.Redis, names: Names) -> None:
    c = consumer(sync_redis, names, lambda e: None)
    sync_redis.xadd(c.stream, {FIELD: '{"type": "session.requested"'})
    c.poll_once()
    (entry,) = sync_redis.xrange(names.dead_letter())
    record = json.loads(entry[1][FIELD])
    assert record["stream"] == c.stream and "unparseable" in record["error"]
    assert sync_redis.xpending(c.stream, c.group)["pending"] == 0


def test_poison_event_goes_to_dead_letter_at_once(sync_redis: redis.Redis, names: Names) -> None:
    def refuse(event: Event) -> None:
        raise PoisonEvent("no actor handles it")

    c = consumer(sync_redis, names, refuse)
    sync_redis.xadd(c.stream, {FIELD: session_event().to_wire()})
    c.poll_once()
    assert "no actor" in json.loads(sync_redis.xrange(names.dead_letter())[0][1][FIELD])["error"]


def test_failing_handler_is_retried_then_dead_lettered(sync_redis: redis.Redis, names: Names) -> None:
    attempts: list[str] = []

    def flaky(event: Event) -> None:
        attempts.append(event.id)
        raise RuntimeError("downstream unavailable")

    c = consumer(sync_redis, names, flaky, max_deliveries=3, claim_idle_ms=0)
    event = session_event()
    sync_redis.xadd(c.stream, {FIELD: event.to_wire()})
    for _ in range(4):
        c.poll_once()
    assert attempts == [event.id] * 3
    record = json.loads(sync_redis.xrange(names.dead_letter())[0][1][FIELD])
    assert "failed 3 times" in record["error"] and "downstream unavailable" in record["error"]
    assert json.loads(record["data"])["id"] == event.id
    assert sync_redis.xpending(c.stream, c.group)["pending"] == 0


def test_a_dead_consumers_entry_is_reclaimed_by_another(sync_redis: redis.Redis, names: Names) -> None:
    dead = consumer(sync_redis, names, lambda e: None, name="dead")
    event = session_event()
    sync_redis.xadd(dead.stream, {FIELD: event.to_wire()})
    # The first consumer reads the entry and dies before acknowledging it.
    sync_redis.xreadgroup(dead.group, "dead", {dead.stream: ">"}, count=1)
    seen: list[str] = []
    alive = consumer(sync_redis, names, lambda e: seen.append(e.id), name="alive", claim_idle_ms=0)
    alive.poll_once()
    assert seen == [event.id]
    assert sync_redis.xpending(dead.stream, dead.group)["pending"] == 0


def test_trimming_drops_only_what_the_group_is_done_with(sync_redis: redis.Redis, names: Names) -> None:
    def handler(event: Event) -> None:
        if event.payload.get("fail"):
            raise RuntimeError("not yet")

    c = consumer(sync_redis, names, handler, retain_ms=0)
    failing = session_event().model_copy(update={"payload": {"fail": 1}})
    events = [session_event(), session_event(), failing, session_event()]
    ids = [sync_redis.xadd(c.stream, {FIELD: e.to_wire()}) for e in events]
    assert c.poll_once() == 4  # two acked, one pending (its handler failed), one more acked
    undelivered = sync_redis.xadd(c.stream, {FIELD: session_event().to_wire()})
    assert c.trim() == 2
    assert [entry_id for entry_id, _ in sync_redis.xrange(c.stream)] == [*ids[2:], undelivered]


def test_trimming_keeps_the_retention_window(sync_redis: redis.Redis, names: Names) -> None:
    c = consumer(sync_redis, names, lambda e: None, retain_ms=600_000)
    sync_redis.xadd(c.stream, {FIELD: session_event().to_wire()})
    assert c.poll_once() == 1
    assert c.trim() == 0 and sync_redis.xlen(c.stream) == 1
