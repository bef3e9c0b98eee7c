"""Session event log → Server-Sent Events, in coder/agentapi's event shapes.

The SSE ``id:`` is the event-log stream id, so a reconnecting client's Last-Event-ID replays exactly
what it missed. ``message_update`` and ``status_change`` carry agentapi's fields (``message``, not
``content``) so its clients work per session; every event also carries our ``event_id`` and
``correlation_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.response.base import ASGIResponse
from litestar.types import HTTPResponseBodyEvent, Receive, Scope, Send
from redis.asyncio import Redis

from api.event_hub import EventHub, LogEntry, Subscription
from api.problems import OUTAGE_RETRY_AFTER_SECONDS, default_outage_exceptions
from api.sse_direct import DirectBody, chunk, direct_body
from events import replies
from events.envelope import Event, EventType, rfc3339
from events.results import read_log
from events.streams import Names, stream_id_key
from services.single_flight import SingleFlight

log = logging.getLogger(__name__)

# How many log entries one replay read fetches at a time.
REPLAY_BATCH = 500
RETRY_MS = 2000
# After a drain, reconnect almost at once: the client should land on a replica that stays.
DRAIN_RETRY_MS = 250
# After an outage (Redis or the database away or out of connections), as long as a 503 says.
OUTAGE_RETRY_MS = OUTAGE_RETRY_AFTER_SECONDS * 1000
OUTAGES = default_outage_exceptions()
# Sessions one chat stream follows at most.
MAX_CHAT_SESSIONS = 50

_SSE_NAMES: dict[EventType, str] = {
    EventType.MESSAGE_UPDATED: "message_update",
    EventType.MESSAGE_COMPLETED: "message_update",
    EventType.SESSION_STATUS: "status_change",
    EventType.SESSION_ENDED: "session_ended",
    EventType.SESSION_FAILED: "session_ended",
    EventType.TOOL_CALL_REQUESTED: "tool_call",
    EventType.TOOL_CALL_PROGRESS: "tool_call",
    EventType.TOOL_CALL_COMPLETED: "tool_call",
    EventType.TOOL_CALL_FAILED: "tool_call",
    EventType.AGENT_TOOL_CALL: "tool_call",
    EventType.PLAN_UPDATED: "plan",
    EventType.AGENT_ERROR: "agent_error",
    EventType.PERMISSION_REQUESTED: "permission_request",
    EventType.PERMISSION_DECIDED: "permission_decision",
}


def sse_name(event_type: EventType) -> str:
    return _SSE_NAMES.get(event_type, event_type.value.replace(".", "_"))


def sse_data(event: Event) -> dict[str, Any]:
    payload = event.payload
    meta = {"event_id": event.id, "correlation_id": event.correlation_id, "type": event.type.value}
    if event.type in (EventType.MESSAGE_UPDATED, EventType.MESSAGE_COMPLETED):
        return {
            "id": payload.get("id", 0),
            "role": payload.get("role", "agent"),
            "message": payload.get("content", ""),
            "time": payload.get("time", rfc3339(event.ts)),
            **meta,
        }
    if event.type is EventType.SESSION_STATUS:
        status = {"status": payload.get("status"), "agent_type": payload.get("agent_type")}
        if payload.get("detail"):
            status["detail"] = payload["detail"]
        return {**status, **meta}
    return {**payload, **meta}


class FrameBatch(ServerSentEventMessage):
    """Messages that were ready at once, written as one body chunk: each chunk makes a trip through
    uvicorn and every middleware's ``send``, which is most of a fan-out's cost per subscriber."""

    def __init__(self, messages: list[ServerSentEventMessage]) -> None:
        super().__init__(data=None)
        self.messages = messages

    @functools.cached_property
    def encoded(self) -> bytes:
        return b"".join(message.encode() for message in self.messages)

    def encode(self) -> bytes:
        return self.encoded


# The connection of the stream whose body a task sends (api.sse_direct), set by :func:`relay` for
# the sources that write to it directly; a context variable, since the source is made by the route,
# before the response and its connection are there.
_connection: contextvars.ContextVar[DirectBody | None] = contextvars.ContextVar(
    "sse_connection", default=None
)

# Why a stream was stopped from outside its task.
_LEFT, _DRAINED, _DONE = "left", "drained", "done"


class _Relay:
    """One stream's body, sent by a task of its own (see :func:`relay`)."""

    def __init__(
        self, messages: AsyncIterator[ServerSentEventMessage], send: Send, streams: OpenStreams
    ) -> None:
        self.reason: str | None = None
        # Until the task runs, a stop is only noted (cancelled before its first step, it would
        # end without its closing chunk); the task reads the reason when it starts.
        self._started = False
        self.task = asyncio.create_task(self._send(messages, send, streams), name="sse-body")

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            if self._started:
                self.task.cancel()

    async def _send(
        self, messages: AsyncIterator[ServerSentEventMessage], send: Send, streams: OpenStreams
    ) -> None:
        self._started = True
        hint = None
        try:
            if streams.draining.is_set():
                self.reason = self.reason or _DRAINED
            elif self.reason is None:
                async for message in messages:
                    await send(_body(message))
        except asyncio.CancelledError:
            if self.reason is None:
                raise
            self.task.uncancel()
        except OUTAGES as exc:
            # The response has started, so no 503 can be sent any more: end the stream cleanly and
            # let the client come back after a while with Last-Event-ID (an exception here would
            # only abort the connection, with a traceback per subscriber).
            log.warning("event stream ended by a backing service outage: %s: %s", type(exc).__name__, exc)
            hint = ServerSentEventMessage(
                comment="backing service unavailable: reconnect", retry=OUTAGE_RETRY_MS, data=None
            )
        if self.reason == _DRAINED:
            # A message taken but not yet sent is not lost: Last-Event-ID replays it on the reconnect.
            hint = ServerSentEventMessage(comment="shutting down: reconnect", retry=DRAIN_RETRY_MS, data=None)
        self.reason = self.reason or _DONE
        if hint is not None:
            await send(_body(hint))
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class OpenStreams:
    """The event streams this process is sending. When it starts shutting down, each ends at once
    with a hint to reconnect soon: another replica picks the client up where Last-Event-ID says."""

    def __init__(self) -> None:
        self.draining = asyncio.Event()
        self._relays: set[_Relay] = set()

    def drain(self) -> None:
        self.draining.set()
        for relay in list(self._relays):
            relay.stop(_DRAINED)


def _body(message: ServerSentEventMessage) -> HTTPResponseBodyEvent:
    return {"type": "http.response.body", "body": message.encode(), "more_body": True}


async def relay(
    messages: AsyncIterator[ServerSentEventMessage], send: Send, receive: Receive, streams: OpenStreams
) -> None:
    """Sends ``messages`` as the response body until they end, the client leaves or the process
    drains (then with a ``retry:`` hint).

    A task of its own takes each message from its source and sends it; the request's task waits for
    it, and a third task only waits for the client to leave (ASGI says so through ``receive`` alone)
    and stops the body. A fan-out to thousands pays per subscriber for every task that wakes between
    the event hub and the socket (a follower task and a drain watcher per stream made three wake-ups
    per event and subscriber, now it is one), and for the depth of the woken task's coroutine chain:
    the request's task is resumed through every middleware's frame, ~15 in all, in and out on each
    wake-up (~18 % of a fan-out's busy samples when the body was sent from it)."""
    # The body's task sees the connection it may write live chunks to (see session_event_stream).
    token = _connection.set(direct_body(receive))
    try:
        this = _Relay(messages, send, streams)
    finally:
        _connection.reset(token)

    async def listen() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        this.stop(_LEFT)

    listener = asyncio.create_task(listen(), name="sse-disconnect")
    streams._relays.add(this)
    try:
        # A cancelled request cancels the body's task through this wait, and ends once it has.
        await this.task
    finally:
        this.reason = this.reason or _DONE
        streams._relays.discard(this)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        with contextlib.suppress(RuntimeError):
            await messages.aclose()  # type: ignore[attr-defined]  # every caller passes an async generator


class _RelayedResponse(ASGIResponse):
    """Litestar's streaming response for the status line and headers, :func:`relay` for the body."""

    __slots__ = ("head", "messages", "streams")

    # ASGIResponse.__init__ is not called: ``head`` holds all it would set.
    def __init__(
        self, head: ASGIResponse, messages: AsyncIterator[ServerSentEventMessage], streams: OpenStreams
    ) -> None:
        self.head = head
        self.messages = messages
        self.streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.head.is_head_response:
            await self.head(scope, receive, send)
            return
        await self.head.start_response(send)
        await relay(self.messages, send, receive, self.streams)


class EventStream(ServerSentEvent):
    """An SSE response whose body is sent by :func:`relay`, not by Litestar's streaming response
    (a task group and a thread-pool hop per stream, and two more async iterators per message)."""

    def __init__(self, messages: AsyncIterator[ServerSentEventMessage], streams: OpenStreams) -> None:
        super().__init__(messages, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.messages = messages
        self.streams = streams

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        return _RelayedResponse(super().to_asgi_response(*args, **kwargs), self.messages, self.streams)


async def _ping(redis: Redis) -> None:
    await redis.ping()


# Clients joining at once (thousands after a deploy) share one PING rather than queue for the pool.
_pings: SingleFlight[Redis, None] = SingleFlight()


async def sse_response(
    redis: Redis, events: AsyncIterator[ServerSentEventMessage], streams: OpenStreams
) -> ServerSentEvent:
    """The SSE response for ``events``, ended early by a shutdown (see :func:`relay`)."""
    # Once the stream has begun, an error can only cut it: find out Redis is away while a 503 can still be sent.
    await _pings.run(redis, functools.partial(_ping, redis))
    return EventStream(events, streams)


class SharedMessage(ServerSentEventMessage):
    """One log entry's SSE message, sent to every subscriber of its session: encoded once."""

    @functools.cached_property
    def encoded(self) -> bytes:
        return super().encode()

    def encode(self) -> bytes:
        return self.encoded


# Every live subscriber of a session converts the same entries: each is parsed and encoded once
# per process while it is among the most recent (entries can be large screens, so not many).
@functools.lru_cache(maxsize=256)
def to_sse(entry: LogEntry) -> ServerSentEventMessage:
    stream_id, raw = entry
    event = Event.from_wire(raw)
    return SharedMessage(
        data=json.dumps(sse_data(event), separators=(",", ":")), event=sse_name(event.type), id=stream_id
    )


# The longest run of entries whose message is shared (see ``_shared``): a turn's entries come in runs
# of 1 to 5; a replay's pages or a lagging subscriber's queue are longer and their own.
SHARED_BATCH = 8


# The subscribers woken by one event mostly take the same entries: they share one message and its
# encoding, not one each (5,000 joins of the same bytes per event). Few live runs are current at a
# time, and a key holds up to SHARED_BATCH entries, so the cache is small.
@functools.lru_cache(maxsize=32)
def _shared(entries: tuple[LogEntry, ...]) -> ServerSentEventMessage:
    if len(entries) == 1:
        return to_sse(entries[0])
    return FrameBatch([to_sse(entry) for entry in entries])


def _message(entries: tuple[LogEntry, ...]) -> ServerSentEventMessage:
    return _shared(entries) if len(entries) <= SHARED_BATCH else FrameBatch([to_sse(e) for e in entries])


# A shared run as a chunk of the response body, framed once for all the subscribers written to directly.
@functools.lru_cache(maxsize=32)
def _shared_chunk(entries: tuple[LogEntry, ...]) -> bytes:
    return chunk(_shared(entries).encode())


class _Live:
    """A live subscriber's sink (``Subscription.sink``): its entries written to its connection as
    one chunk, and the last one's id kept for a catch-up."""

    __slots__ = ("connection", "last")

    def __init__(self, connection: DirectBody) -> None:
        self.connection = connection
        self.last: str | None = None

    def write(self, entries: tuple[LogEntry, ...]) -> bool:
        framed = _shared_chunk(entries) if len(entries) <= SHARED_BATCH else chunk(_message(entries).encode())
        if not self.connection.write(framed):
            return False
        self.last = entries[-1][0]
        return True


async def _replay(
    redis: Redis, names: Names, session_id: str, after_id: str
) -> AsyncIterator[list[LogEntry]]:
    while True:
        entries = await read_log(redis, names, session_id, after_id=after_id, count=REPLAY_BATCH)
        if entries:
            yield entries
        if len(entries) < REPLAY_BATCH:
            return
        after_id = entries[-1][0]


async def _session_log(
    redis: Redis,
    names: Names,
    hub: EventHub,
    session_id: str,
    after: str,
    heartbeat_seconds: float,
    connection: DirectBody | None = None,
) -> AsyncGenerator[list[LogEntry], None]:
    """The log's entries after ``after`` (its tail from the hub, further back from Redis), then live,
    de-duplicated; entries ready at once come as one list, and an empty list is a quiet period.
    With a ``connection``, live entries that come while this waits are written to it instead (see
    api.sse_direct), once they can no longer repeat what was read from Redis."""
    last = after
    live = _Live(connection) if connection is not None else None
    async with hub.subscribe(session_id, after) as subscription:
        # Live entries can repeat what was read from Redis, never what came from the hub's tail.
        overlap = subscription.backlog is None
        if overlap:
            async for page in _replay(redis, names, session_id, last):
                last = page[-1][0]
                yield page
        elif subscription.backlog:
            last = subscription.backlog[-1][0]
            yield subscription.backlog
        while True:
            if subscription.lagged:
                overlap = True
                async for page in _catch_up(redis, names, subscription, last):
                    last = page[-1][0]
                    yield page
                continue
            subscription.sink = live.write if live is not None and not overlap else None
            fresh = await subscription.take(heartbeat_seconds)
            if live is not None and live.last is not None:
                last, live.last = live.last, None
            if fresh is None:
                yield []
                continue
            if overlap:
                seen = stream_id_key(last)
                fresh = [entry for entry in fresh if stream_id_key(entry[0]) > seen]
                # The hub offers newer entries only, so nothing after these can repeat the replay.
                overlap = not fresh
            if fresh:
                last = fresh[-1][0]
                yield fresh


async def session_event_stream(
    redis: Redis,
    names: Names,
    hub: EventHub,
    session_id: str,
    last_event_id: str | None,
    heartbeat_seconds: float,
) -> AsyncIterator[ServerSentEventMessage]:
    """Replay after ``last_event_id`` (everything when absent), then relay live, de-duplicated."""
    yield ServerSentEventMessage(comment="connected", retry=RETRY_MS, data=None)
    log_entries = _session_log(
        redis, names, hub, session_id, last_event_id or "0-0", heartbeat_seconds, _connection.get()
    )
    async with contextlib.aclosing(log_entries):  # leaves the hub as soon as this stream is closed
        async for entries in log_entries:
            if not entries:
                yield ServerSentEventMessage(comment="ping", data=None)
            else:
                yield _message(tuple(entries))


async def _catch_up(
    redis: Redis, names: Names, subscription: Subscription, last: str
) -> AsyncIterator[list[LogEntry]]:
    """A subscriber that fell behind drops its queue and reads the log instead."""
    subscription.pending.clear()
    subscription.lagged = False
    async for page in _replay(redis, names, subscription.session_id, last):
        yield page


# Redis stream ids are two unsigned 64-bit numbers; a larger one made XRANGE fail after the 200.
MAX_STREAM_ID_PART = 2**64 - 1
STREAM_ID = re.compile(r"[0-9]{1,20}(?:-[0-9]{1,20})?")


def parse_last_event_id(value: str | None) -> str | None:
    """A valid stream id or None; anything else is treated as a fresh connection."""
    if not value or not STREAM_ID.fullmatch(value):
        return None
    ms, seq = stream_id_key(value)
    return value if ms <= MAX_STREAM_ID_PART and seq <= MAX_STREAM_ID_PART else None


async def chat_event_stream(
    redis: Redis,
    names: Names,
    hub: EventHub,
    active_sessions: Callable[[], Awaitable[list[str]]],
    heartbeat_seconds: float,
    refresh_seconds: float = 5.0,
) -> AsyncIterator[ServerSentEventMessage]:
    """Live events of all the caller's active sessions, each with its ``session_id``.

    Sessions started after the connection joins within ``refresh_seconds``. No replay: a client
    that needs a session's history reads that session's own stream with Last-Event-ID.
    """
    yield ServerSentEventMessage(comment="connected", retry=RETRY_MS, data=None)
    # A pump's failure comes through the queue too: the stream must not go on without that session.
    merged: asyncio.Queue[ServerSentEventMessage | Exception] = asyncio.Queue(1000)
    pumps: dict[str, asyncio.Task[None]] = {}

    async def pump(session_id: str) -> None:
        try:
            tail = replies.entries(await redis.xrevrange(names.session_log(session_id), count=1))
            after = tail[0][0] if tail else None
            # From here on nothing of this session is missed: the client may rely on that.
            await merged.put(
                ServerSentEventMessage(event="session_joined", data=json.dumps({"session_id": session_id}))
            )
            log_entries = _session_log(redis, names, hub, session_id, after or "0-0", 3600)
            async with contextlib.aclosing(log_entries):
                async for entries in log_entries:
                    for entry in entries:
                        message = to_sse(entry)
                        data = json.loads(str(message.data))
                        data["session_id"] = session_id
                        await merged.put(
                            ServerSentEventMessage(
                                data=json.dumps(data, separators=(",", ":")),
                                event=message.event,
                                id=message.id,
                            )
                        )
        except Exception as exc:
            await merged.put(exc)

    loop = asyncio.get_running_loop()
    next_refresh = 0.0
    try:
        while True:
            if loop.time() >= next_refresh:
                for session_id in await active_sessions():
                    if session_id not in pumps and len(pumps) < MAX_CHAT_SESSIONS:
                        pumps[session_id] = asyncio.create_task(pump(session_id), name=f"chat-{session_id}")
                next_refresh = loop.time() + refresh_seconds
            try:
                item = await asyncio.wait_for(merged.get(), min(heartbeat_seconds, refresh_seconds))
            except TimeoutError:
                yield ServerSentEventMessage(comment="ping", data=None)
                continue
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        for task in pumps.values():
            task.cancel()
