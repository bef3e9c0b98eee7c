"""The ``default`` pool's OAuth upkeep: refreshing MCP grants shortly before their tokens expire."""

from __future__ import annotations

import dramatiq

from workers.context import current
from workers.event_context import current_event
from workers.oauth_refresh import TokenRefresher

# Unreachable authorization servers are retried with Dramatiq's back-off; a refusal is final and
# is handled (needs_reauth), not raised.
MAX_RETRIES = 5


@dramatiq.actor(
    queue_name="default", actor_name="refresh_oauth_grant", max_retries=MAX_RETRIES, envelope=True
)
async def refresh_oauth_grant(envelope: str) -> None:
    await TokenRefresher(current()).scheduled(current_event())
