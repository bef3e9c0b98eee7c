"""Concurrent identical lookups share one query: a storm of requests from one caller (5,000 SSE
clients connecting at once, a retrying script) costs one database round trip, not one each.

Nothing is kept once the lookup ends: this coalesces, it does not cache, so it never serves
anything older than the query that was already running when a request arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(lookup())
            running.add_done_callback(lambda done: self._finished(key, done))
        # A caller that goes away (a client disconnecting) must not cancel the others' lookup.
        return await asyncio.shield(running)

    def _finished(self, key: K, done: asyncio.Future[V]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved here, so a failure nobody awaits any more is not logged as lost
