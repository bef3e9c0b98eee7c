"""The result path: a worker appends to the session's event log, then announces it.

Order matters: XADD first, then PUBLISH, in one round trip. The notice only says "this log moved";
subscribers read the log itself, so a lost or reordered notice never loses an event.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from redis.asyncio import Redis

from events import replies
from events.envelope import Event
from events.metrics import count
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
        count(pipe, names, "events_published", stream="session_log")
        stream_id, *_ = await pipe.execute()
    return str(stream_id)


async def read_log(
    redis: Redis, names: Names, session_id: UUID | str, after_id: str = "0-0", count: int | None = None
) -> list[LogEntry]:
    """Entries strictly after ``after_id``, oldest first (the client decodes responses)."""
    entries = replies.entries(
        await redis.xrange(names.session_log(session_id), min=f"({after_id}", max="+", count=count)
    )
    return [(entry_id, fields[FIELD]) for entry_id, fields in entries]


REPLY_TTL_SECONDS = 300
BLOCK_SLICE_SECONDS = 2.0


async def append_reply(redis: Redis, names: Names, request_id: str, event: Event) -> None:
    """Answer a request the ingress is waiting for; the stream expires on its own."""
    key = names.reply(request_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(key, {FIELD: event.to_wire()}, maxlen=100, approximate=True)
        pipe.expire(key, REPLY_TTL_SECONDS)
        await pipe.execute()


async def await_reply(redis: Redis, names: Names, request_id: str, timeout: float) -> Event | None:
    """The first answer to ``request_id``, or None after ``timeout`` seconds.

    A blocking XREAD on the reply stream: an answer written before the wait started is still read,
    which a pub/sub subscription made too late would miss.
    """
    key = names.reply(request_id)
    loop_deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = loop_deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        # Blocks in slices so a dropped connection or a cancelled request frees its connection soon,
        # each well inside the client's socket timeout (redis-py's default is 5 s).
        block_ms = max(1, int(min(remaining, BLOCK_SLICE_SECONDS) * 1000))
        answer = replies.streams(await redis.xread({key: "0-0"}, count=1, block=block_ms))
        if answer:
            _, entries = answer[0]
            return Event.from_wire(entries[0][1][FIELD])
