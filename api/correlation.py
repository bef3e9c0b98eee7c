"""Correlation ids: taken from the caller's X-Correlation-ID (or X-Request-ID) or made here
(api.edge), carried into every event the request publishes and echoed on the response."""

from __future__ import annotations

import re

from events.envelope import new_event_id

HEADER = "x-correlation-id"
_ACCEPTED = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def accepted_or_new(given: bytes | None) -> str:
    """The caller's correlation id when it is a sane one, else a new one."""
    text = given.decode("latin-1") if given else ""
    return text if _ACCEPTED.match(text) else new_event_id()
