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
    """XADD the event to its work stream; returns the stream id. Work streams are never trimmed
    here: an entry leaves only when a dispatcher has handed it to a queue and acknowledged it."""
    stream = work_stream(names, event)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(stream, {FIELD: event.to_wire()})
        count(pipe, names, "events_published", stream=names.stream_label(stream))
        stream_id, _ = await pipe.execute()
    return str(stream_id)
