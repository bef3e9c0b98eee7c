"""Fan-out of session event logs to the SSE subscribers of one ingress process.

One pub/sub connection per process, subscribed only to the channels of sessions somebody here is
watching. A notice says "the log moved"; the hub then reads the log itself from the last id it
delivered, so entries published out of order by two workers, or notices lost in a reconnect, never
leave a gap. Subscribers get entries in stream order and only ever read Redis themselves to replay
(Last-Event-ID) or to catch up after falling behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from events import replies
from events.results import LogEntry, read_log
from events.streams import Names

log = logging.getLogger(__name__)

# Entries a subscriber may have queued before it is marked as lagging and must re-read the log.
SUBSCRIBER_QUEUE_SIZE = 1000


# Queued in place of an entry when a subscriber has had nothing for a heartbeat period.
IDLE: LogEntry = ("", "")


@dataclass(eq=False)
class Subscription:
    session_id: str
    queue: asyncio.Queue[LogEntry] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE_SIZE))
    lagged: bool = False
    _busy: bool = False
    _ticker: asyncio.TimerHandle | None = None

    async def next(self, heartbeat: float) -> LogEntry | None:
        """The next entry, or None once a whole ``heartbeat`` period went by without one (between
        one and two periods of quiet). One timer per subscriber ticks each period: a timeout per
        wait would arm and cancel a timer for every event and subscriber, which in a fan-out to
        thousands cost more than sending."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().call_later(heartbeat, self._tick, heartbeat)
        entry = self.queue.get_nowait() if not self.queue.empty() else await self.queue.get()
        if entry is IDLE:
            return None
        self._busy = True
        return entry

    def _tick(self, heartbeat: float) -> None:
        if not self._busy and self.queue.empty():
            self.queue.put_nowait(IDLE)
        self._busy = False
        self._ticker = asyncio.get_running_loop().call_later(heartbeat, self._tick, heartbeat)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    def offer(self, entry: LogEntry) -> None:
        if self.lagged:
            return
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.lagged = True


@dataclass
class _Channel:
    subscriptions: set[Subscription] = field(default_factory=set)
    last_id: str = "0-0"
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class EventHub:
    def __init__(self, redis: Redis, names: Names) -> None:
        self._redis = redis
        self._names = names
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._channels: dict[str, _Channel] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def subscriber_count(self) -> int:
        return sum(len(channel.subscriptions) for channel in self._channels.values())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()

    @contextlib.asynccontextmanager
    async def subscribe(self, session_id: str) -> AsyncIterator[Subscription]:
        """Watch a session's log. Subscribed before the caller replays, so nothing falls between."""
        name = self._names.session_channel(session_id)
        subscription = Subscription(session_id)
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel()
            try:
                await self._pubsub.subscribe(name)
                tail = replies.entries(
                    await self._redis.xrevrange(self._names.session_log(session_id), count=1)
                )
            except BaseException:
                del self._channels[name]
                raise
            channel.last_id = tail[0][0] if tail else "0-0"
            self._subscribed.set()
        channel.subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            channel.subscriptions.discard(subscription)
            if not channel.subscriptions and self._channels.get(name) is channel:
                del self._channels[name]
                with contextlib.suppress(RedisError, OSError):
                    await self._pubsub.unsubscribe(name)

    async def _run(self) -> None:
        while True:
            await self._subscribed.wait()
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:
                log.warning("event hub lost Redis, retrying: %s", exc)
                await asyncio.sleep(1.0)
                await self._resubscribe()
                continue
            if not self._channels:
                self._subscribed.clear()
            if message is None or message.get("type") != "message":
                continue
            channel_name = message["channel"]
            if isinstance(channel_name, bytes):
                channel_name = channel_name.decode()
            channel = self._channels.get(channel_name)
            if channel is not None:
                await self._pull(channel_name, channel)

    async def _resubscribe(self) -> None:
        """After a reconnect, subscribe again and pull whatever arrived meanwhile."""
        with contextlib.suppress(RedisError, OSError):
            if self._channels:
                await self._pubsub.subscribe(*self._channels)
            for name, channel in list(self._channels.items()):
                await self._pull(name, channel)

    async def _pull(self, channel_name: str, channel: _Channel) -> None:
        session_id = self._names.session_of_channel(channel_name)
        async with channel.lock:
            try:
                entries = await read_log(self._redis, self._names, session_id, after_id=channel.last_id)
            except (RedisError, OSError) as exc:
                log.warning("event hub could not read %s: %s", session_id, exc)
                return
            for entry in entries:
                channel.last_id = entry[0]
                for subscription in list(channel.subscriptions):
                    subscription.offer(entry)
