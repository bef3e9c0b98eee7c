"""Publishing work: an envelope appended to the work stream of the pool that handles its type."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from events.batch import RedisBatch
from events.envelope import Event, EventType
from events.metrics import count
from events.streams import FIELD, WORK_ROUTES, Names


def work_stream(names: Names, event: Event | EventType) -> str:
    """The work stream of an event, or of events of a type."""
    type_ = event if isinstance(event, EventType) else event.type
    kind = WORK_ROUTES.get(type_)
    if kind is None:
        raise ValueError(f"{type_} is a result, not work: it has no work stream")
    return names.work(kind)


async def publish(redis: Redis, names: Names, event: Event) -> str:
    """XADD the event to its work stream; returns the stream id. No MAXLEN here: an entry may
    leave only after its consumer group acknowledged it (see ``StreamConsumer.trim``)."""
    async with redis.pipeline(transaction=False) as pipe:
        queue_publish(pipe, names, event)
        stream_id, _ = await pipe.execute()
    return str(stream_id)


def queue_publish(pipe: Pipeline, names: Names, event: Event, counts: RedisBatch | None = None) -> None:
    """Put ``publish``'s two commands on ``pipe``: its replies are the stream id and the count.
    With ``counts`` the count goes to that batch instead, summed with the
    pipeline's others, and the stream id is the only reply."""
    queue_publish_wire(pipe, names, event.type, event.to_wire(), counts)


def queue_publish_wire(
    pipe: Pipeline, names: Names, type_: EventType, wire: str, counts: RedisBatch | None = None
) -> None:
    """``queue_publish`` for an event of ``type_`` already encoded (``wire``, as its ``to_wire``)."""
    stream = work_stream(names, type_)
    pipe.xadd(stream, {FIELD: wire})
    count(pipe if counts is None else counts, names, "events_published", stream=names.stream_label(stream))
