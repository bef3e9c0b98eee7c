"""The SSE response loop (`until_draining`): messages ready together leave as one chunk, in order;
the end, a shutdown and a source error still come after what was ready; a quiet subscriber gets
heartbeats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from litestar.response import ServerSentEventMessage
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from api.event_hub import EventHub, Subscription
from api.problems import OUTAGE_RETRY_AFTER_SECONDS
from api.sse import DRAIN_RETRY_MS, FrameBatch, chat_event_stream, until_draining
from events.streams import Names
from tests.fixtures.stack import free_port


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


async def test_a_chat_stream_ends_with_a_reconnect_hint_when_a_session_cannot_be_read() -> None:
    """A session's pump that fails (here: Redis refuses connections) ends the whole chat stream,
    which otherwise would go on without that session's events."""
    unreachable = Redis(host="127.0.0.1", port=free_port())
    names = Names("agentapi-test-chat:")

    async def active_sessions() -> list[str]:
        return ["a-session"]

    try:
        chat = chat_event_stream(unreachable, names, EventHub(unreachable, names), active_sessions, 5.0)
        async with asyncio.timeout(30):
            sent = [m async for m in until_draining(chat, asyncio.Event())]
    finally:
        await unreachable.aclose()
    assert sent[0].comment == "connected"
    assert sent[-1].retry == OUTAGE_RETRY_AFTER_SECONDS * 1000 and "reconnect" in str(sent[-1].comment)
