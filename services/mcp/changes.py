"""Telling the tools workers that an MCP configuration, or a grant for it, changed: they forget
what they loaded of it (workers/loaded_configs.py) and read it afresh on its next call."""

from __future__ import annotations

from uuid import UUID

from redis.asyncio import Redis

from events.streams import Names


async def announce_change(redis: Redis, names: Names, config_id: UUID, *stale_keys: str) -> None:
    """Deletes ``stale_keys``, then publishes the change, in one round trip (in that order, so no
    worker that hears it can still read a deleted key). Called after the change is committed: a
    worker that reloads on hearing it reads the new row."""
    async with redis.pipeline(transaction=False) as pipe:
        if stale_keys:
            pipe.delete(*stale_keys)
        pipe.publish(names.mcp_config_changes(), str(config_id))
        await pipe.execute()
