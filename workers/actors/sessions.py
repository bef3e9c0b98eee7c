"""The ``sessions`` pool: one long-lived actor per running session (the PTY host)."""

from __future__ import annotations

import dramatiq

from events.envelope import Event
from workers.context import current, working_on
from workers.session_host import SessionHost

# The host enforces the session's lifetime itself; Dramatiq's limit is only a backstop.
TIME_LIMIT_MS = (current().settings.session_max_lifetime + 300) * 1000


@dramatiq.actor(queue_name="sessions", actor_name="run_session", max_retries=3, time_limit=TIME_LIMIT_MS)
async def run_session(envelope: str) -> None:
    with working_on(Event.from_wire(envelope)) as event:
        await SessionHost(current(), event).run()
