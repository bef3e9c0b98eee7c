"""Every hosted session's input stream read by one blocking XREAD per worker process.

A blocking read holds its Redis connection for the whole wait, so one read per session would need
a connection per session (hundreds per worker). Here one reader task waits on all the registered
streams at once and hands each session its entries, in order, on an asyncio queue.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio
from redis.exceptions import RedisError
from redis.typing import KeyT, StreamIdT

from events import replies
from events.replies import Entry

log = logging.getLogger(__name__)

# How long one XREAD waits; a newly registered stream joins the read after at most this long.
BLOCK_MS = 200
# Entries taken per stream per read: a session works through them one at a time anyway.
BATCH = 16
RETRY_SECONDS = 0.5


class InputStreams:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        # stream -> id of the last entry handed over, and where its entries go
        self._after: dict[KeyT, StreamIdT] = {}
        self._queues: dict[str, asyncio.Queue[Entry]] = {}
        self._reader: asyncio.Task[None] | None = None

    def subscribe(self, stream: str, after_id: str) -> asyncio.Queue[Entry]:
        """Entries of ``stream`` newer than ``after_id``, as they arrive, until unsubscribed."""
        queue: asyncio.Queue[Entry] = asyncio.Queue()
        self._after[stream], self._queues[stream] = after_id, queue
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="input-streams")
        return queue

    def unsubscribe(self, stream: str) -> None:
        self._after.pop(stream, None)
        self._queues.pop(stream, None)

    async def _read(self) -> None:
        while self._after:
            try:
                reply = await self._client.xread(dict(self._after), count=BATCH, block=BLOCK_MS)
            except Exception as exc:
                # Every hosted session's input stops while this task is down: it must outlive any failure.
                log.warning(
                    "reading session input streams failed (%s); retrying",
                    exc,
                    exc_info=not isinstance(exc, RedisError),
                )
                await asyncio.sleep(RETRY_SECONDS)
                continue
            for stream, entries in replies.streams(reply):
                queue = self._queues.get(stream)
                if queue is None:  # unsubscribed while the read was under way
                    continue
                for entry_id, fields in entries:
                    queue.put_nowait((entry_id, fields))
                self._after[stream] = entries[-1][0]
