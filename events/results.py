"""The result path: a worker appends to the session's event log, then announces it.

Order matters: XADD first, then PUBLISH, in one round trip. The notice only says "this log moved";
subscribers read the log itself, so a lost or reordered notice never loses an event.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from events import replies, wire
from events.batch import RedisBatch
from events.envelope import Event
from events.metrics import count
from events.publisher import queue_publish
from events.streams import FIELD, Names

LogEntry = tuple[str, str]  # (stream id, envelope JSON)


async def append_result(
    redis: Redis, names: Names, event: Event, maxlen: int, reply_to: str | None = None
) -> str:
    """XADD ``event`` to its session's log and announce it; returns its log id. With ``reply_to``,
    the same event first answers that waiting request, in the same round trip: Redis runs the
    commands in order, so the caller is woken before the log's subscribers, as when the reply went
    alone first, without a round trip of its own or a second encoding of the event."""
    async with redis.pipeline(transaction=False) as pipe:
        queue_result(pipe, names, event, maxlen, reply_to)
        answers = await pipe.execute()
    return str(answers[log_id_index(reply_to)])


def queue_result(
    pipe: Pipeline,
    names: Names,
    event: Event,
    maxlen: int,
    reply_to: str | None = None,
    counts: RedisBatch | None = None,
) -> None:
    """Put ``append_result``'s commands on ``pipe``; the log id is reply ``log_id_index(reply_to)``.
    With ``counts`` the count goes to that batch, summed with its pipeline's others."""
    if event.session_id is None:
        raise ValueError(f"{event.type} has no session to report to")
    wire = event.to_wire()
    if reply_to is not None:
        queue_reply(pipe, names, reply_to, wire)
    pipe.xadd(names.session_log(event.session_id), {FIELD: wire}, maxlen=maxlen, approximate=True)
    pipe.publish(names.session_channel(event.session_id), event.id)
    count(pipe if counts is None else counts, names, "events_published", stream="session_log")


def log_id_index(reply_to: str | None) -> int:
    return REPLY_COMMANDS if reply_to is not None else 0


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


# How many commands ``queue_reply`` puts on a pipeline.
REPLY_COMMANDS = 2


def queue_reply(pipe: Pipeline, names: Names, request_id: str, wire: str) -> None:
    """Put the answer to a request the ingress is waiting for on ``pipe``; the stream expires on its own."""
    key = names.reply(request_id)
    pipe.xadd(key, {FIELD: wire}, maxlen=100, approximate=True)
    pipe.expire(key, REPLY_TTL_SECONDS)


async def append_reply(redis: Redis, names: Names, request_id: str, event: Event) -> None:
    """Answer a request the ingress is waiting for (one without a session to log the answer to)."""
    async with redis.pipeline(transaction=False) as pipe:
        queue_reply(pipe, names, request_id, event.to_wire())
        await pipe.execute()


async def await_reply(
    redis: Redis, names: Names, request_id: str, timeout: float, publishing: Event | None = None
) -> Event | None:
    """The first answer to ``request_id``, or None after ``timeout`` seconds. With ``publishing``
    (the request itself), the request goes to its work stream in the same round trip as the first
    read: one round trip less per call, as the read comes after the XADD.

    A blocking XREAD on the reply stream: an answer written before the wait started is still read,
    which a pub/sub subscription made too late would miss.
    """
    key = names.reply(request_id)
    loop_deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = loop_deadline - asyncio.get_running_loop().time()
        if remaining <= 0 and publishing is None:
            return None
        # Blocks in slices so a dropped connection or a cancelled request frees its connection soon,
        # each well inside the client's socket timeout (redis-py's default is 5 s).
        block_ms = max(1, int(min(remaining, BLOCK_SLICE_SECONDS) * 1000))
        if publishing is None:
            read = await redis.xread({key: "0-0"}, count=1, block=block_ms)
        else:
            async with redis.pipeline(transaction=False) as pipe:
                queue_publish(pipe, names, publishing)
                pipe.xread({key: "0-0"}, count=1, block=block_ms)
                # Replies read by one hiredis reader (events/wire.py), not redis-py's reply by reply.
                *_, read = await wire.execute_blocking(pipe, block_ms)
            publishing = None
        answer = replies.streams(read)
        if answer:
            _, entries = answer[0]
            return Event.from_wire(entries[0][1][FIELD])
