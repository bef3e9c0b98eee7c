"""Session event log → Server-Sent Events, in coder/agentapi's event shapes.

The SSE ``id:`` is the event-log stream id, so a reconnecting client's Last-Event-ID replays exactly
what it missed. ``message_update`` and ``status_change`` carry agentapi's fields (``message``, not
``content``) so its clients work per session; every event also carries our ``event_id`` and
``correlation_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from litestar.response import ServerSentEvent, ServerSentEventMessage
from redis.asyncio import Redis

from api.event_hub import EventHub, LogEntry, Subscription, stream_id_key
from events.envelope import Event, EventType
from events.results import read_log
from events.streams import Names

# How many log entries one replay read fetches at a time.
REPLAY_BATCH = 500
RETRY_MS = 2000
# After a drain, reconnect almost at once: the client should land on a replica that stays.
DRAIN_RETRY_MS = 250
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
            "time": payload.get("time", event.ts.isoformat()),
            **meta,
        }
    if event.type is EventType.SESSION_STATUS:
        return {"status": payload.get("status"), "agent_type": payload.get("agent_type"), **meta}
    return {**payload, **meta}


async def until_draining(
    events: AsyncIterator[ServerSentEventMessage], draining: asyncio.Event
) -> AsyncIterator[ServerSentEventMessage]:
    """Relays ``events`` until the process starts shutting down, then ends the stream with a hint
    to reconnect soon: another replica picks the client up where Last-Event-ID says."""
    shutting_down = asyncio.ensure_future(draining.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(events))
            await asyncio.wait({following, shutting_down}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                yield ServerSentEventMessage(
                    comment="shutting down: reconnect", retry=DRAIN_RETRY_MS, data=None
                )
                return
            try:
                yield following.result()
            except StopAsyncIteration:
                return
    finally:
        shutting_down.cancel()
        with contextlib.suppress(RuntimeError):
            await events.aclose()  # type: ignore[attr-defined]


async def sse_response(
    redis: Redis, events: AsyncIterator[ServerSentEventMessage], draining: asyncio.Event
) -> ServerSentEvent:
    """The SSE response for ``events``, ended early by a shutdown (see :func:`until_draining`)."""
    # Once the stream has begun, an error can only cut it: find out Redis is away while a 503 can still be sent.
    await redis.ping()
    return ServerSentEvent(
        until_draining(events, draining), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def to_sse(entry: LogEntry) -> ServerSentEventMessage:
    stream_id, raw = entry
    event = Event.from_wire(raw)
    return ServerSentEventMessage(
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
            try:
                entry = await asyncio.wait_for(subscription.queue.get(), heartbeat_seconds)
            except TimeoutError:
                yield ServerSentEventMessage(comment="ping", data=None)
                continue
            if stream_id_key(entry[0]) <= stream_id_key(last):
                continue
            last = entry[0]
            yield to_sse(entry)


async def _catch_up(
    redis: Redis, names: Names, subscription: Subscription, last: str
) -> AsyncIterator[LogEntry]:
    """A subscriber that fell behind drops its queue and reads the log instead."""
    while not subscription.queue.empty():
        subscription.queue.get_nowait()
    subscription.lagged = False
    async for entry in _replay(redis, names, subscription.session_id, last):
        yield entry


def parse_last_event_id(value: str | None) -> str | None:
    """A valid stream id or None; anything else is treated as a fresh connection."""
    if not value:
        return None
    try:
        stream_id_key(value)
    except ValueError:
        return None
    return value


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
    merged: asyncio.Queue[ServerSentEventMessage] = asyncio.Queue(1000)
    pumps: dict[str, asyncio.Task[None]] = {}

    async def pump(session_id: str) -> None:
        tail = await redis.xrevrange(names.session_log(session_id), count=1)
        after = tail[0][0] if tail else None
        async for message in session_event_stream(redis, names, hub, session_id, after or "0-0", 3600):
            if message.data is not None:
                data = json.loads(str(message.data))
                data["session_id"] = session_id
                await merged.put(
                    ServerSentEventMessage(
                        data=json.dumps(data, separators=(",", ":")), event=message.event, id=message.id
                    )
                )

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
                yield await asyncio.wait_for(merged.get(), min(heartbeat_seconds, refresh_seconds))
            except TimeoutError:
                yield ServerSentEventMessage(comment="ping", data=None)
    finally:
        for task in pumps.values():
            task.cancel()
