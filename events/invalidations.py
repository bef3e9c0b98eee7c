"""A per-process cache's subscription to the channel that says what it must forget.

What a process reads from Redis and keeps for a moment (gateway tokens in the ingress, healthy
circuit breakers in the tools workers) may be kept only while this subscription is confirmed: a
message names a key to forget at once; a lost connection forgets everything and stops the caching
until subscribed again (messages sent meanwhile were missed). ``epoch`` counts messages and
subscription changes, so a read that saw one happen while it waited for Redis is not kept (its
answer may predate the message it missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Waiting this long between attempts to subscribe again after the subscription broke.
RESUBSCRIBE_SECONDS = 1.0


class Invalidations:
    def __init__(
        self, redis: Redis, channel: str, forget: Callable[[str], object], forget_all: Callable[[], None]
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._forget = forget
        self._forget_all = forget_all
        self.live = False
        self.epoch = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Subscribes in the background (on the running event loop); ``live`` once confirmed."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name=f"invalidations {self._channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _reset(self, live: bool) -> None:
        self._forget_all()
        self.epoch += 1
        self.live = live

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=RESUBSCRIBE_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # Also after redis-py reconnected and subscribed again by itself: whatever
                        # was published in between never arrived.
                        self._reset(live=True)
                    elif message["type"] == "message":
                        data = message["data"]
                        self.epoch += 1
                        self._forget(data.decode() if isinstance(data, bytes) else data)
            except Exception as exc:  # whatever broke the subscription, the loop must live on
                log.warning("%s unreachable, not caching what it invalidates: %s", self._channel, exc)
            finally:
                self._reset(live=False)
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(RESUBSCRIBE_SECONDS)
