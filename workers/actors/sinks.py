"""The ``default`` pool's event-sink work: publishing a session's events to a sink, in order."""

from __future__ import annotations

import asyncio
from uuid import UUID

import dramatiq

from workers.context import WorkerContext, current
from workers.sinks import QUEUED_SECONDS, Drain

# The attempt budget is the sink's (AGENTAPI_SINK_MAX_ATTEMPTS, kept on the delivery rows); this
# only has to stay above it, so Dramatiq's Retries middleware never ends a drain first.
MAX_RETRIES = 1_000


@dramatiq.actor(queue_name="default", actor_name="drain_sink", max_retries=MAX_RETRIES, max_backoff=3_600_000)
async def drain_sink(sink_id: str, org_id: str, session: str) -> None:
    """Publish the pending events of one session (or ``-``: events outside sessions) to one sink;
    a broker failure raises dramatiq.Retry with the sink's backoff."""
    await Drain(current(), UUID(sink_id), UUID(org_id), session).run()


async def request_drain(context: WorkerContext, sink_id: UUID, org_id: UUID, session: str) -> None:
    """Enqueue a drain of the pair unless one is queued already: that one reads the rows when it
    runs, so a burst of a session's events costs a few drains, not one each."""
    queued = context.names.sink_drain_queued(sink_id, session)
    if await context.redis.set(queued, "1", nx=True, ex=QUEUED_SECONDS):
        await asyncio.to_thread(drain_sink.send, str(sink_id), str(org_id), session)
