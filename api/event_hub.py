"""Fan-out of session event logs to the SSE subscribers of one ingress process.

One pub/sub connection per process, subscribed only to the channels of sessions somebody here is
watching. A notice says "the log moved"; the hub then reads the log itself from the last id it
delivered, so entries published out of order by two workers, or notices lost in a reconnect, never
leave a gap. Subscribers get entries in stream order and only ever read Redis themselves to replay
further back than the hub remembers (see ``RECENT_ENTRIES``) or to catch up after falling behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from events import replies
from events.results import LogEntry, read_log
from events.streams import FIELD, Names, stream_id_key

log = logging.getLogger(__name__)

# Entries a subscriber may have queued before it is marked as lagging and must re-read the log.
SUBSCRIBER_QUEUE_SIZE = 1000
# The tail of each watched session's log the hub keeps, so that a joining client's replay (a fresh
# client of a short session, a reconnect a moment behind) is read from here: 5,000 clients joining
# one session made 5,000 identical XRANGEs, and the Redis pool ran dry (503s, streams cut short).
# Bounded per session, in entries and in bytes (entries can be whole screens).
RECENT_ENTRIES = 200
RECENT_BYTES = 256 * 1024


# Queued in place of an entry when a subscriber has had nothing for a heartbeat period.
IDLE: LogEntry = ("", "")
# Subscribers woken per turn of the event loop (see ``Waker``).
WAKE_BATCH = 100


class Waker:
    """Wakes waiting subscribers a batch per turn of the event loop, in the order they got entries.

    Waking all of a session's 5,000 subscribers at once made one loop turn of ~5,000 socket writes
    (0.3 to 0.5 s), and the entries logged meanwhile (a turn's reply ~10 ms after its ``running``
    status) went out in a second round to all of them. Between batches the loop reads its sockets,
    so the hub appends those entries to the queues of the subscribers not yet woken, and each of
    them writes the whole turn at once. Nothing waits deliberately: a batch is woken on the next
    turn of the loop, and a lone subscriber is woken as before."""

    def __init__(self) -> None:
        self._waiting: deque[Subscription] = deque()
        self._handle: asyncio.Handle | None = None

    def add(self, subscription: Subscription) -> None:
        self._waiting.append(subscription)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._handle = None
        for _ in range(min(WAKE_BATCH, len(self._waiting))):
            self._waiting.popleft().wake()
        if self._waiting:
            self._handle = asyncio.get_running_loop().call_soon(self._wake)


@dataclass(eq=False, slots=True)
class Subscription:
    """One subscriber's entries, queued by the hub. A deque and one waiting future rather than an
    asyncio.Queue: the hub offers every entry to thousands of these, and the queue's bookkeeping
    (size checks, unfinished-task count, its getters' deque) was a sixth of a fan-out's CPU. Slots:
    a fan-out touches each of thousands once per event, and a __dict__ is one more block to fetch."""

    session_id: str
    pending: deque[LogEntry] = field(default_factory=deque)
    lagged: bool = False
    # What the log held after the subscriber's Last-Event-ID when it joined, from the hub's tail;
    # None when that reaches back further than the hub remembers (the subscriber reads Redis).
    backlog: list[LogEntry] | None = None
    # Shared by the hub's subscribers, so that they are woken in batches.
    waker: Waker = field(default_factory=Waker)
    # Hands a waiting subscriber's entries over without waking its task (api.sse_direct writes them
    # to its connection), or says False and the task is woken to take them.
    sink: Callable[[tuple[LogEntry, ...]], bool] | None = None
    _waiter: asyncio.Future[None] | None = None
    _queued: bool = False
    _busy: bool = False
    _ticker: asyncio.TimerHandle | None = None

    async def take(self, heartbeat: float) -> list[LogEntry] | None:
        """Every queued entry, once there is one (sent together as one chunk), or None once a whole
        ``heartbeat`` period went by without one (between one and two periods of quiet). One timer
        per subscriber ticks each period: a timeout per wait would arm and cancel a timer for every
        event and subscriber, which in a fan-out to thousands cost more than sending."""
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().call_later(heartbeat, self._tick, heartbeat)
        if not self.pending:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        # IDLE is queued only into an empty queue, so it can only come first.
        if self.pending[0] is IDLE:
            self.pending.popleft()
            return None
        self._busy = True
        taken = list(self.pending)
        self.pending.clear()
        return taken

    def _wanted(self) -> None:
        """Queue a waiting subscriber that has entries to be woken."""
        if self.pending and not self._queued and self._waiter is not None and not self._waiter.done():
            self._queued = True
            self.waker.add(self)

    def wake(self) -> None:
        self._queued = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        # A lagging subscriber's queue lost entries: its task reads the log instead.
        sink = self.sink
        if sink is not None and not self.lagged and self.pending and self.pending[0] is not IDLE:
            if sink(tuple(self.pending)):
                self.pending.clear()
                self._busy = True
                return
        waiter.set_result(None)

    def _tick(self, heartbeat: float) -> None:
        if not self._busy and not self.pending:
            self.pending.append(IDLE)
            self._wanted()
        self._busy = False
        self._ticker = asyncio.get_running_loop().call_later(heartbeat, self._tick, heartbeat)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    def offer(self, entries: list[LogEntry]) -> None:
        """A pull's entries, in one call per subscriber: a call per entry and subscriber was most of
        the hub's share of a fan-out's CPU (a turn logs 5 entries in 2 or 3 pulls). Entries past the
        queue's room are dropped and the subscriber marked as lagging, as if offered one by one."""
        if self.lagged:
            return
        room = SUBSCRIBER_QUEUE_SIZE - len(self.pending)
        if len(entries) > room:
            self.lagged = True
            entries = entries[:room]
        self.pending.extend(entries)
        self._wanted()


@dataclass(eq=False)
class _Channel:
    subscriptions: set[Subscription] = field(default_factory=set)
    last_id: str = "0-0"
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The log's last entries up to last_id: every entry after ``floor`` is in it.
    recent: deque[LogEntry] = field(default_factory=deque)
    recent_bytes: int = 0
    floor: str = "0-0"
    # The first read of the log's tail; subscribers join once it is done.
    filled: asyncio.Future[None] | None = None
    # Subscribers waiting for ``filled``: the channel is kept while there are any.
    waiting: int = 0

    def remember(self, entry: LogEntry) -> None:
        self.last_id = entry[0]
        self.recent.append(entry)
        self.recent_bytes += len(entry[1])
        while len(self.recent) > RECENT_ENTRIES or (
            self.recent_bytes > RECENT_BYTES and len(self.recent) > 1
        ):
            dropped = self.recent.popleft()
            self.recent_bytes -= len(dropped[1])
            self.floor = dropped[0]

    def since(self, after: str) -> list[LogEntry] | None:
        """The remembered entries after ``after``, or None if some could be older than the tail."""
        after_key = stream_id_key(after)
        if after_key < stream_id_key(self.floor):
            return None
        if not self.recent or after_key < stream_id_key(self.recent[0][0]):
            return list(self.recent)  # a new client: all of it (no id to compare per entry)
        newer: list[LogEntry] = []
        for entry in reversed(self.recent):
            if stream_id_key(entry[0]) <= after_key:
                break
            newer.append(entry)
        newer.reverse()
        return newer


class EventHub:
    def __init__(self, redis: Redis, names: Names) -> None:
        self._redis = redis
        self._names = names
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._channels: dict[str, _Channel] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._waker = Waker()

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
    async def subscribe(self, session_id: str, after: str) -> AsyncIterator[Subscription]:
        """Watch a session's log, with what it held after ``after`` as the backlog when the hub
        remembers that far back. Subscribed before anything is read, so nothing falls between."""
        name = self._names.session_channel(session_id)
        subscription = Subscription(session_id, waker=self._waker)
        while True:
            channel = self._channels.get(name)
            if channel is None:
                channel = self._channels[name] = _Channel()
                channel.filled = asyncio.ensure_future(self._fill(name, session_id, channel))
            assert channel.filled is not None
            if not channel.filled.done():
                channel.waiting += 1
                try:
                    # Shielded: a client that leaves must not cancel the read the others wait for.
                    await asyncio.shield(channel.filled)
                finally:
                    channel.waiting -= 1
                    if not channel.filled.done():  # this subscriber left while waiting
                        await self._release(name, channel)
            channel.filled.result()
            # The channel may have been dropped while this subscriber waited (all the others left).
            if self._channels.get(name) is channel:
                break
        # No await from here to the subscription: the backlog ends where the hub's next entry starts.
        subscription.backlog = channel.since(after)
        channel.subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            channel.subscriptions.discard(subscription)
            await self._release(name, channel)

    async def _fill(self, name: str, session_id: str, channel: _Channel) -> None:
        try:
            await self._pubsub.subscribe(name)
            # One more than is kept: when it comes back, the entries after it are all remembered.
            tail = replies.entries(
                await self._redis.xrevrange(self._names.session_log(session_id), count=RECENT_ENTRIES + 1)
            )
        except BaseException:
            if self._channels.get(name) is channel:
                del self._channels[name]
            raise
        if len(tail) > RECENT_ENTRIES:
            channel.floor = tail.pop()[0]
        for entry_id, fields in reversed(tail):
            channel.remember((entry_id, fields[FIELD]))
        self._subscribed.set()

    async def _release(self, name: str, channel: _Channel) -> None:
        """Stop watching a session nobody here follows or waits for any more."""
        if channel.subscriptions or channel.waiting or self._channels.get(name) is not channel:
            return
        del self._channels[name]
        if channel.filled is not None:
            channel.filled.cancel()
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
        filled = channel.filled
        assert filled is not None
        if not filled.done():
            # The notice may be for an entry the first read of the tail missed: read after it.
            await asyncio.wait([filled])
        if filled.cancelled() or filled.exception() is not None:
            return
        async with channel.lock:
            try:
                entries = await read_log(self._redis, self._names, session_id, after_id=channel.last_id)
            except (RedisError, OSError) as exc:
                log.warning("event hub could not read %s: %s", session_id, exc)
                return
            if not entries:
                return
            for entry in entries:
                channel.remember(entry)
            for subscription in list(channel.subscriptions):
                subscription.offer(entries)
