"""MCP configurations a tools worker loaded (the row, its opened secret, the caller's grant), kept
for the caller's next calls.

A tenant transaction and an AES-GCM open per call were a quarter of what the gateway added. An
entry is keyed by the caller's organization and user and the configuration, and serves only a
request naming that key and the version it was loaded at: one tenant's or user's load never
answers another's request. Entries are used only while this worker is subscribed to
``Names.mcp_config_changes`` (events/invalidations.py), on which every change of a configuration or
of a grant for it is published: an edit, a disable or a delete reaches the next call at once,
rather than after a time-to-live. ``KEPT_SECONDS`` bounds what no message reaches (one lost while the
subscription looked healthy, a change made by hand in the database).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from uuid import UUID

from redis.asyncio import Redis

from events.invalidations import Invalidations
from events.streams import Names
from schemas.tables import McpConfiguration, McpOAuthToken
from workers.mcp_client import ServerSpec

KEPT_SECONDS = 60.0
MAX_ENTRIES = 1024

Loaded = tuple[McpConfiguration, ServerSpec, McpOAuthToken | None]
# (organization, user or None, configuration): whose request the entry may serve.
LoadedKey = tuple[UUID, UUID | None, UUID]


class LoadedConfigs:
    def __init__(self, redis: Redis, names: Names, kept_seconds: float = KEPT_SECONDS) -> None:
        self.kept_seconds = kept_seconds
        self._entries: OrderedDict[LoadedKey, tuple[float, Loaded]] = OrderedDict()
        self._changes = Invalidations(
            redis, names.mcp_config_changes(), self._forget_config, self._entries.clear
        )

    @property
    def caching(self) -> bool:
        return self._changes.live

    @property
    def epoch(self) -> int:
        """Counts the changes heard and the subscription's changes: a load that saw it move while it
        read the database may predate a change, and is not kept."""
        return self._changes.epoch

    async def stop(self) -> None:
        await self._changes.stop()

    def get(self, key: LoadedKey, version: str | None) -> Loaded | None:
        self._changes.start()
        cached = self._entries.get(key)
        if cached is None or not self.caching:
            return None
        until, loaded = cached
        if time.monotonic() >= until or version != loaded[0].updated_at.isoformat():
            return None
        return loaded

    def put(self, key: LoadedKey, loaded: Loaded, epoch: int, started: float) -> None:
        """Keeps ``loaded``, read from ``started`` (monotonic) on, unless a change was heard since
        ``epoch``."""
        if not self.caching or self._changes.epoch != epoch:
            return
        self._entries[key] = (started + self.kept_seconds, loaded)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)

    def drop(self, key: LoadedKey) -> None:
        self._entries.pop(key, None)

    def _forget_config(self, config_id: str) -> None:
        for key in [key for key in self._entries if str(key[2]) == config_id]:
            del self._entries[key]
