"""The ``default`` pool's event-sink work: publishing a session's events to a sink, in order."""

from __future__ import annotations

from uuid import UUID

import dramatiq

from workers.context import current
from workers.sinks import Drain

# The attempt budget is the sink's (AGENTAPI_SINK_MAX_ATTEMPTS, kept on the delivery rows); this
# only has to stay above it, so Dramatiq's Retries middleware never ends a drain first.
MAX_RETRIES = 1_000


@dramatiq.actor(queue_name="default", actor_name="drain_sink", max_retries=MAX_RETRIES, max_backoff=3_600_000)
async def drain_sink(sink_id: str, org_id: str, session: str) -> None:
    """Publish the pending events of one session (or ``-``: events outside sessions) to one sink;
    a broker failure raises dramatiq.Retry with the sink's backoff."""
    await Drain(current(), UUID(sink_id), UUID(org_id), session).run()
