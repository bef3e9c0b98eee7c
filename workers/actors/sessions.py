"""The ``sessions`` pool: one long-lived actor per running session (the PTY host)."""

from __future__ import annotations

import dramatiq

from workers.context import current
from workers.event_context import current_event
from workers.session_host import HandedOver, SessionHost

# The host enforces the session's lifetime itself; Dramatiq's limit is only a backstop.
TIME_LIMIT_MS = (current().settings.session_max_lifetime + 300) * 1000


MAX_FAILURES = 3


def retry_when(retries: int, exception: BaseException) -> bool:
    """A handover is not a failure: it may happen at every deploy of a long session."""
    return isinstance(exception, HandedOver) or retries < MAX_FAILURES


@dramatiq.actor(
    queue_name="sessions",
    actor_name="run_session",
    retry_when=retry_when,
    time_limit=TIME_LIMIT_MS,
    envelope=True,
)
async def run_session(envelope: str) -> None:
    context = current()
    with context.load.hosting():
        await SessionHost(context, current_event()).run()
