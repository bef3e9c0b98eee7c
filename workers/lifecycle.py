"""The sessions worker's reconciler thread: it ends sessions whose host was lost
(``services.sessions.lifecycle`` says when a session counts as lost)."""

from __future__ import annotations

import asyncio
import logging
import threading

from events.connection import pooled_redis
from events.streams import Names
from schemas.db import dispose_engine, open_engine
from schemas.settings import Settings
from services.sessions.lifecycle import end_lost_sessions

log = logging.getLogger(__name__)


async def reconcile_forever(settings: Settings, stop: threading.Event) -> None:
    """At start-up and then every ``reconcile_interval_seconds`` until ``stop`` is set."""
    engine = open_engine(settings, pool_size=2)
    redis = pooled_redis(settings.redis_url, wait_seconds=5)
    names = Names(settings.redis_prefix)
    try:
        while not stop.is_set():
            try:
                lost = await end_lost_sessions(engine, redis, names, settings)
                if lost:
                    log.warning("ended %d sessions whose host was lost", len(lost))
            except Exception as exc:  # a database or Redis outage: the next round retries
                log.error("session reconciliation failed: %s", exc)
            await asyncio.to_thread(stop.wait, settings.reconcile_interval_seconds)
    finally:
        await redis.aclose()
        await dispose_engine(engine)


def run_reconciler(settings: Settings, stop: threading.Event) -> None:
    """Thread body for a worker process."""
    asyncio.run(reconcile_forever(settings, stop))
