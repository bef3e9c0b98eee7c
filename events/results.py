"""The result path: a worker appends to the session's event log, then announces it.

Order matters: XADD first, then PUBLISH, in one round trip. The notice only says "this log moved";
subscribers read the log itself, so a lost or reordered notice never loses an event.
"""

from __future__ import annotations

from uuid import UUID

from redis.asyncio import Redis

from events.envelope import Event
from events.streams import FIELD, Names

LogEntry = tuple[str, str]  # (stream id, envelope JSON)


async def append_result(redis: Redis, names: Names, event: Event, maxlen: int) -> str:
    if event.session_id is None:
        raise ValueError(f"{event.type} has no session to report to")
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(
            names.session_log(event.session_id), {FIELD: event.to_wire()}, maxlen=maxlen, approximate=True
        )
        pipe.publish(names.session_channel(event.session_id), event.id)
        stream_id, _ = await pipe.execute()
    return str(stream_id)


async def read_log(
    redis: Redis, names: Names, session_id: UUID | str, after_id: str = "0-0", count: int | None = None
) -> list[LogEntry]:
    """Entries strictly after ``after_id``, oldest first (the client decodes responses)."""
    entries = await redis.xrange(names.session_log(session_id), min=f"({after_id}", max="+", count=count)
    return [(entry_id, fields[FIELD]) for entry_id, fields in entries]
