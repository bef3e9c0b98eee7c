"""Sessions hosts' advertisements: what a sessions worker writes (``workers.placement``) and the
metrics read (``api.metrics``), in the hash ``Names.session_hosts()``: worker id → JSON
``{slots, sessions, expires}``."""

from __future__ import annotations

import json
import time

# An advertisement older than this is a dead host's.
HOST_TTL_SECONDS = 10.0


def host_entry(slots: int, sessions: int) -> str:
    return json.dumps({"slots": slots, "sessions": sessions, "expires": time.time() + HOST_TTL_SECONDS})


def live_hosts(entries: dict[str, str], now: float) -> dict[str, dict[str, float]]:
    """The advertisements that have not expired, by worker id."""
    hosts = {}
    for worker_id, raw in entries.items():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and float(entry.get("expires", 0)) > now:
            hosts[worker_id] = entry
    return hosts
