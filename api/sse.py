"""Session event log → Server-Sent Events, in coder/agentapi's event shapes.

The SSE ``id:`` is the event-log stream id, so a reconnecting client's Last-Event-ID replays exactly
what it missed. ``message_update`` and ``status_change`` carry agentapi's fields (``message``, not
``content``) so its clients work per session; every event also carries our ``event_id`` and
``correlation_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from litestar.response import ServerSentEvent, ServerSentEventMessage
from redis.asyncio import Redis

from api.event_hub import EventHub, LogEntry, Subscription
from api.problems import OUTAGE_RETRY_AFTER_SECONDS, default_outage_exceptions
from events import replies
from events.envelope import Event, EventType, rfc3339
from events.results import read_log
from events.streams import Names, stream_id_key

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


# What the follower hands over besides messages: the source ended, the process is draining.
_END, _DRAINED = object(), object()
# Messages a stream's follower may have ready before the response takes them, sent together.
HANDOFF_SIZE = 16


class FrameBatch(ServerSentEventMessage):
    """Messages that were ready at once, written as one body chunk: each chunk makes a trip through
    uvicorn and every middleware's ``send``, which is most of a fan-out's cost per subscriber."""

    def __init__(self, messages: list[ServerSentEventMessage]) -> None:
        super().__init__(data=None)
        self.messages = messages

    def encode(self) -> bytes:
        return b"".join(message.encode() for message in self.messages)


async def until_draining(
    events: AsyncIterator[ServerSentEventMessage], draining: asyncio.Event
) -> AsyncIterator[ServerSentEventMessage]:
    """Relays ``events`` until the process starts shutting down, then ends the stream with a hint
    to reconnect soon: another replica picks the client up where Last-Event-ID says.

    One task follows the source and one waits for the shutdown, for the stream's whole life: racing
    the two anew for every event would cost a task and a wait per event and subscriber, which is
    most of the work of a fan-out to thousands."""
    handoff: asyncio.Queue[object] = asyncio.Queue(HANDOFF_SIZE)

    async def follow() -> None:
        try:
            async for message in events:
                await handoff.put(message)
        except Exception as exc:  # raised again below, in the response's task
            await handoff.put(exc)
        else:
            await handoff.put(_END)

    async def watch() -> None:
        await draining.wait()
        following.cancel()
        # A message taken but not yet sent is not lost: Last-Event-ID replays it on the reconnect.
        while not handoff.empty():
            handoff.get_nowait()
        handoff.put_nowait(_DRAINED)

    following = asyncio.create_task(follow(), name="sse-follow")
    watching = asyncio.create_task(watch(), name="sse-drain")
    try:
        item = await handoff.get()
        while True:
            if item is _END:
                return
            if item is _DRAINED:
                yield ServerSentEventMessage(
                    comment="shutting down: reconnect", retry=DRAIN_RETRY_MS, data=None
                )
                return
            if isinstance(item, OUTAGES):
                # The response has started, so no 503 can be sent any more: end the stream cleanly
                # and let the client come back after a while with Last-Event-ID (an exception here
                # would only abort the connection, with a traceback per subscriber).
                log.warning(
                    "event stream ended by a backing service outage: %s: %s", type(item).__name__, item
                )
                yield ServerSentEventMessage(
                    comment="backing service unavailable: reconnect", retry=OUTAGE_RETRY_MS, data=None
                )
                return
            if isinstance(item, Exception):
                raise item
            assert isinstance(item, ServerSentEventMessage)
            ready, item = [item], None
            while item is None and not handoff.empty():
                taken = handoff.get_nowait()
                if isinstance(taken, ServerSentEventMessage):
                    ready.append(taken)
                else:
                    item = taken  # the end, a shutdown or an error: handled after these are sent
            yield ready[0] if len(ready) == 1 else FrameBatch(ready)
            if item is None:
                item = await handoff.get()
    finally:
        for task in (following, watching):
            task.cancel()
        await asyncio.gather(following, watching, return_exceptions=True)
        with contextlib.suppress(RuntimeError):
            await events.aclose()  # type: ignore[attr-defined]  # every caller passes an async generator


async def sse_response(
    redis: Redis, events: AsyncIterator[ServerSentEventMessage], draining: asyncio.Event
) -> ServerSentEvent:
    """The SSE response for ``events``, ended early by a shutdown (see :func:`until_draining`)."""
    # Once the stream has begun, an error can only cut it: find out Redis is away while a 503 can still be sent.
    await redis.ping()
    return ServerSentEvent(
        until_draining(events, draining), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


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


async def _replay(redis: Redis, names: Names, session_id: str, after_id: str) -> AsyncIterator[LogEntry]:
    while True:
        entries = await read_log(redis, names, session_id, after_id=after_id, count=REPLAY_BATCH)
        for entry in entries:
            yield entry
        if len(entries) < REPLAY_BATCH:
            return
        after_id = entries[-1][0]


async def session_event_stream(
    redis: Redis,
    names: Names,
    hub: EventHub,
    session_id: str,
    last_event_id: str | None,
    heartbeat_seconds: float,
) -> AsyncIterator[ServerSentEventMessage]:
    """Replay after ``last_event_id`` (everything when absent), then relay live, de-duplicated."""
    last = last_event_id or "0-0"
    yield ServerSentEventMessage(comment="connected", retry=RETRY_MS, data=None)
    async with hub.subscribe(session_id) as subscription:
        async for entry in _replay(redis, names, session_id, last):
            last = entry[0]
            yield to_sse(entry)
        while True:
            if subscription.lagged:
                async for entry in _catch_up(redis, names, subscription, last):
                    last = entry[0]
                    yield to_sse(entry)
                continue
            live = await subscription.next(heartbeat_seconds)
            if live is None:
                yield ServerSentEventMessage(comment="ping", data=None)
                continue
            if stream_id_key(live[0]) <= stream_id_key(last):
                continue
            last = live[0]
            yield to_sse(live)


async def _catch_up(
    redis: Redis, names: Names, subscription: Subscription, last: str
) -> AsyncIterator[LogEntry]:
    """A subscriber that fell behind drops its queue and reads the log instead."""
    while not subscription.queue.empty():
        subscription.queue.get_nowait()
    subscription.lagged = False
    async for entry in _replay(redis, names, subscription.session_id, last):
        yield entry


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
            async for message in session_event_stream(redis, names, hub, session_id, after or "0-0", 3600):
                if message.data is not None:
                    data = json.loads(str(message.data))
                    data["session_id"] = session_id
                    await merged.put(
                        ServerSentEventMessage(
                            data=json.dumps(data, separators=(",", ":")), event=message.event, id=message.id
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
