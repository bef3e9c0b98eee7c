"""The SSE body loop (`relay`) and what feeds it: every message in order, then the end; a source
error after what was sent; an outage, a shutdown or the client leaving end the stream as the README
says; a joining client's replay comes from the event hub's tail of the log when it reaches back
that far; entries ready together leave as one chunk; a quiet subscriber gets heartbeats; the
subscribers of a large fan-out are woken in batches, so an entry offered meanwhile reaches those not
yet woken together with the first."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator

import pytest
from litestar.response import ServerSentEventMessage
from litestar.types import Message
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from api.event_hub import RECENT_ENTRIES, WAKE_BATCH, EventHub, Subscription, Waker
from api.problems import OUTAGE_RETRY_AFTER_SECONDS
from api.sse import DRAIN_RETRY_MS, FrameBatch, OpenStreams, chat_event_stream, relay, session_event_stream
from events.envelope import Event, EventType
from events.results import append_result
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


class Client:
    """The ASGI side of one response: what it was sent, and a way to hang up."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def receive(self) -> Message:
        return await self._inbox.get()

    def hang_up(self) -> None:
        self._inbox.put_nowait({"type": "http.disconnect"})

    @property
    def body(self) -> bytes:
        return b"".join(message["body"] for message in self.sent)

    @property
    def ended(self) -> bool:
        return bool(self.sent) and self.sent[-1]["more_body"] is False


async def test_every_message_is_sent_in_order_then_the_body_ends() -> None:
    client = Client()
    await relay(source_of(frames(5)), client.send, client.receive, OpenStreams())
    assert client.body == b"".join(m.encode() for m in frames(5))
    assert client.ended


async def test_a_source_error_comes_after_the_sent_messages() -> None:
    client = Client()
    with pytest.raises(RuntimeError):
        await relay(source_of(frames(3), RuntimeError("a bug")), client.send, client.receive, OpenStreams())
    assert client.body == b"".join(m.encode() for m in frames(3))


async def test_an_outage_ends_the_stream_with_a_later_reconnect_hint() -> None:
    """Redis out of connections after the response started: what was ready is sent, then the stream
    ends cleanly with a retry as long as a 503's Retry-After, for a Last-Event-ID reconnect."""
    outage = RedisConnectionError("No connection available.")
    client = Client()
    await relay(source_of(frames(3), outage), client.send, client.receive, OpenStreams())
    hint = ServerSentEventMessage(
        comment="backing service unavailable: reconnect", retry=OUTAGE_RETRY_AFTER_SECONDS * 1000, data=None
    )
    assert client.body == b"".join(m.encode() for m in [*frames(3), hint])
    assert client.ended


async def endless(closed: asyncio.Event) -> AsyncIterator[ServerSentEventMessage]:
    try:
        yield frames(1)[0]
        await asyncio.Event().wait()
        yield frames(2)[1]
    finally:
        closed.set()


async def test_a_shutdown_ends_every_stream_with_a_reconnect_hint() -> None:
    streams, clients, closed = OpenStreams(), [Client(), Client()], [asyncio.Event(), asyncio.Event()]
    relays = [
        asyncio.create_task(relay(endless(done), client.send, client.receive, streams))
        for client, done in zip(clients, closed, strict=True)
    ]
    while not all(client.sent for client in clients):
        await asyncio.sleep(0.01)
    streams.drain()
    await asyncio.wait_for(asyncio.gather(*relays), 10)
    hint = ServerSentEventMessage(comment="shutting down: reconnect", retry=DRAIN_RETRY_MS, data=None)
    for client, done in zip(clients, closed, strict=True):
        assert client.body == frames(1)[0].encode() + hint.encode()
        assert client.ended and done.is_set()
    # A stream that starts once the process is draining ends at once, the same way.
    late = Client()
    await asyncio.wait_for(relay(endless(asyncio.Event()), late.send, late.receive, streams), 10)
    assert late.body == hint.encode() and late.ended


async def test_a_client_that_leaves_ends_its_stream_and_its_source() -> None:
    client, closed = Client(), asyncio.Event()
    sending = asyncio.create_task(relay(endless(closed), client.send, client.receive, OpenStreams()))
    while not client.sent:
        await asyncio.sleep(0.01)
    client.hang_up()
    await asyncio.wait_for(sending, 10)
    assert closed.is_set()
    assert client.body == frames(1)[0].encode()


async def test_a_quiet_subscriber_gets_heartbeats_between_entries() -> None:
    subscription = Subscription("s")
    try:
        assert await subscription.take(0.05) is None, "a quiet period ends in a heartbeat"
        subscription.offer([("1-0", "first")])
        subscription.offer([("2-0", "second")])
        assert await subscription.take(0.05) == [("1-0", "first"), ("2-0", "second")]
        assert await subscription.take(0.05) is None
    finally:
        subscription.close()


async def test_an_entry_offered_during_a_large_fan_out_joins_the_first_for_those_not_yet_woken() -> None:
    waker = Waker()
    subscriptions = [Subscription("s", waker=waker) for _ in range(3 * WAKE_BATCH)]

    async def take(subscription: Subscription) -> list[tuple[str, str]] | None:
        return await subscription.take(60)

    takers = [asyncio.create_task(take(subscription)) for subscription in subscriptions]
    try:
        await asyncio.sleep(0)  # every taker waits
        for subscription in subscriptions:
            subscription.offer([("1-0", "first")])
        while not takers[0].done():
            await asyncio.sleep(0)
        for subscription in subscriptions:
            subscription.offer([("2-0", "second")])
        taken = await asyncio.wait_for(asyncio.gather(*takers), 10)
    finally:
        for subscription in subscriptions:
            subscription.close()
    assert taken[0] == [("1-0", "first")], "the first batch is woken at once, not held back"
    assert taken[-1] == [("1-0", "first"), ("2-0", "second")]
    assert all(entries is not None and entries[0] == ("1-0", "first") for entries in taken)
    # Those that took the first alone have the second waiting: nothing lost, nothing repeated.
    assert all(
        subscription.pending == deque([("2-0", "second")])
        for subscription, entries in zip(subscriptions, taken, strict=True)
        if entries is not None and len(entries) == 1
    )


async def log(aredis: Redis, names: Names, session_id: str, count: int) -> list[str]:
    event = Event(
        type=EventType.AGENT_ERROR, org_id=uuid.uuid4(), user_id=None, session_id=uuid.UUID(session_id)
    )
    return [
        await append_result(aredis, names, event.model_copy(update={"payload": {"n": n}}), 10_000)
        for n in range(count)
    ]


async def test_a_joining_client_replays_from_the_hub_tail_or_from_redis(aredis: Redis, names: Names) -> None:
    """The hub remembers the last entries of a watched session's log: a client joining after one of
    them gets the rest from memory; one whose Last-Event-ID is older reads Redis (backlog None)."""
    session_id = str(uuid.uuid4())
    ids = await log(aredis, names, session_id, RECENT_ENTRIES + 5)
    hub = EventHub(aredis, names)
    await hub.start()
    try:
        async with hub.subscribe(session_id, "0-0") as first:
            assert first.backlog is None, "the log is longer than the tail the hub keeps"
            async with hub.subscribe(session_id, ids[-3]) as recent:
                assert recent.backlog is not None and [e[0] for e in recent.backlog] == ids[-2:]
            async with hub.subscribe(session_id, ids[4]) as oldest_kept:
                # The tail keeps the last RECENT_ENTRIES: everything after ids[4].
                assert oldest_kept.backlog is not None and [e[0] for e in oldest_kept.backlog] == ids[5:]
            async with hub.subscribe(session_id, ids[3]) as older:
                assert older.backlog is None
            # Entries logged from now on reach the subscribers live and extend the tail.
            more = await log(aredis, names, session_id, 2)
            live: list[str] = []
            while len(live) < len(more):
                live.extend(entry_id for entry_id, _ in await first.take(5) or [])
            assert live == more
            async with hub.subscribe(session_id, ids[-1]) as late:
                assert late.backlog is not None and [e[0] for e in late.backlog] == more
    finally:
        await hub.stop()


async def test_entries_ready_together_leave_as_one_chunk(aredis: Redis, names: Names) -> None:
    session_id = str(uuid.uuid4())
    ids = await log(aredis, names, session_id, 3)
    hub = EventHub(aredis, names)
    await hub.start()
    try:
        stream = session_event_stream(aredis, names, hub, session_id, None, 30)
        assert (await anext(stream)).comment == "connected"
        replayed = await anext(stream)
        assert isinstance(replayed, FrameBatch) and [m.id for m in replayed.messages] == ids
        waiting = asyncio.ensure_future(anext(stream))
        more = await log(aredis, names, session_id, 4)
        live = [await waiting]
        while sum(len(m.messages) if isinstance(m, FrameBatch) else 1 for m in live) < len(more):
            live.append(await anext(stream))
        sent = [m for batch in live for m in (batch.messages if isinstance(batch, FrameBatch) else [batch])]
        assert [m.id for m in sent] == more
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await hub.stop()


async def test_a_chat_stream_ends_with_a_reconnect_hint_when_a_session_cannot_be_read() -> None:
    """A session's pump that fails (here: Redis refuses connections) ends the whole chat stream,
    which otherwise would go on without that session's events."""
    unreachable = Redis(host="127.0.0.1", port=free_port())
    names = Names("agentapi-test-chat:")

    async def active_sessions() -> list[str]:
        return ["a-session"]

    client = Client()
    try:
        chat = chat_event_stream(unreachable, names, EventHub(unreachable, names), active_sessions, 5.0)
        async with asyncio.timeout(30):
            await relay(chat, client.send, client.receive, OpenStreams())
    finally:
        await unreachable.aclose()
    assert client.body.startswith(b": connected")
    assert f"retry: {OUTAGE_RETRY_AFTER_SECONDS * 1000}".encode() in client.body and client.ended
