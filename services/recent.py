"""Values looked up a moment ago, kept per process for a few seconds so a hot path (every request
of a member, every tool call of an agent) does not ask the database again each time.

Bounded: beyond ``size`` entries the oldest go first, so a burst of distinct keys cannot grow a
process without limit. Other processes learn of a change only when their entry expires, so use
it only where ``seconds`` of staleness is acceptable and something downstream checks again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")


class Recent(Generic[K, V]):
    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self.seconds = seconds
        self.size = size
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, default: D) -> V | D:
        entry = self._entries.get(key)
        if entry is None:
            return default
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return default
        return entry[1]

    def put(self, key: K, value: V) -> None:
        self._entries[key] = (time.monotonic() + self.seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)
