"""The SSE response loop (`until_draining`): messages ready together leave as one chunk, in order;
the end, a shutdown and a source error still come after what was ready; a quiet subscriber gets
heartbeats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from litestar.response import ServerSentEventMessage
from redis.exceptions import ConnectionError as RedisConnectionError

from api.event_hub import Subscription
from api.problems import OUTAGE_RETRY_AFTER_SECONDS
from api.sse import DRAIN_RETRY_MS, FrameBatch, until_draining


def frames(count: int) -> list[ServerSentEventMessage]:
    return [
        ServerSentEventMessage(data=f"entry {n}", id=f"{n}-0", event="message_update") for n in range(count)
    ]


async def source_of(
    messages: list[ServerSentEventMessage], then: BaseException | None = None
) -> AsyncIterator[ServerSentEventMessage]:
    for message in messages:
        yield message
    if then is not None:
        raise then


async def test_ready_messages_leave_as_one_chunk_in_order() -> None:
    sent = [m async for m in until_draining(source_of(frames(5)), asyncio.Event())]
    assert len(sent) == 1 and isinstance(sent[0], FrameBatch)
    assert sent[0].encode() == b"".join(m.encode() for m in frames(5))


async def test_a_source_error_comes_after_the_ready_messages() -> None:
    sent: list[ServerSentEventMessage] = []
    with pytest.raises(RuntimeError):
        async for message in until_draining(source_of(frames(3), RuntimeError("a bug")), asyncio.Event()):
            sent.append(message)
    assert b"".join(m.encode() for m in sent) == b"".join(m.encode() for m in frames(3))


async def test_an_outage_ends_the_stream_with_a_later_reconnect_hint() -> None:
    """Redis out of connections after the response started: what was ready is sent, then the stream
    ends cleanly with a retry as long as a 503's Retry-After, for a Last-Event-ID reconnect."""
    outage = RedisConnectionError("No connection available.")
    sent = [m async for m in until_draining(source_of(frames(3), outage), asyncio.Event())]
    assert b"".join(m.encode() for m in sent[:-1]) == b"".join(m.encode() for m in frames(3))
    assert sent[-1].retry == OUTAGE_RETRY_AFTER_SECONDS * 1000 and "reconnect" in str(sent[-1].comment)


async def test_a_shutdown_ends_the_stream_with_a_reconnect_hint() -> None:
    draining = asyncio.Event()

    async def endless() -> AsyncIterator[ServerSentEventMessage]:
        yield frames(1)[0]
        await asyncio.Event().wait()
        yield frames(2)[1]

    stream = until_draining(endless(), draining)
    first = await anext(stream)
    assert first.encode() == frames(1)[0].encode()
    draining.set()
    last = await anext(stream)
    assert last.retry == DRAIN_RETRY_MS and "reconnect" in str(last.comment)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_a_quiet_subscriber_gets_heartbeats_between_entries() -> None:
    subscription = Subscription("s")
    try:
        assert await subscription.next(0.05) is None, "a quiet period ends in a heartbeat"
        subscription.offer(("1-0", "first"))
        subscription.offer(("2-0", "second"))
        assert [await subscription.next(0.05), await subscription.next(0.05)] == [
            ("1-0", "first"),
            ("2-0", "second"),
        ]
        assert await subscription.next(0.05) is None
    finally:
        subscription.close()
