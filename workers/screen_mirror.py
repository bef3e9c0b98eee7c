"""The agent's current screen, mirrored to Redis for coder/agentapi's ``GET /internal/screen``.

The host writes the rendered screen when it has changed, at most every ``MIRROR_INTERVAL`` (a
render costs about 1.5 ms, so a TUI redrawing in bursts is rendered a few times a second, not per
byte); the key expires with the host.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from workers.pty_session import PtySession

MIRROR_INTERVAL = 0.2
SCREEN_TTL_SECONDS = 10


async def mirror_screen(redis: Redis, key: str, pty: PtySession) -> None:
    seen = -1.0
    refreshed = 0.0
    while True:
        now = time.monotonic()
        if pty.last_output != seen:
            seen = pty.last_output
            await redis.set(key, pty.snapshot(), ex=SCREEN_TTL_SECONDS)
            refreshed = now
        elif now - refreshed >= SCREEN_TTL_SECONDS / 2:
            await redis.expire(key, SCREEN_TTL_SECONDS)
            refreshed = now
        await asyncio.sleep(MIRROR_INTERVAL)
