"""Publishing work: an envelope appended to the work stream of the pool that handles its type."""

from __future__ import annotations

from redis.asyncio import Redis

from events.envelope import Event
from events.metrics import count
from events.streams import FIELD, WORK_ROUTES, Names


def work_stream(names: Names, event: Event) -> str:
    kind = WORK_ROUTES.get(event.type)
    if kind is None:
        raise ValueError(f"{event.type} is a result, not work: it has no work stream")
    return names.work(kind)


async def publish(redis: Redis, names: Names, event: Event) -> str:
    """XADD the event to its work stream; returns the stream id. No MAXLEN here: an entry may
    leave only after its consumer group acknowledged it (see ``StreamConsumer.trim``)."""
    stream = work_stream(names, event)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(stream, {FIELD: event.to_wire()})
        count(pipe, names, "events_published", stream=names.stream_label(stream))
        stream_id, _ = await pipe.execute()
    return str(stream_id)
