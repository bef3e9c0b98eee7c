"""Placement of sessions on hosts: each sessions worker advertises its slots and load, and takes
no more sessions than it has slots.

A session holds a worker thread for its whole life, so a worker's slots are its threads. Dramatiq
prefetches twice its threads by default: a full host would then keep sessions it cannot start
while another host has room. A sessions worker prefetches only as many as it has slots, so what it
cannot host stays in the queue for the others, and "sessions waiting for a host" is what the
autoscaler sees (``api/metrics.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from events.hosts import host_entry
from events.streams import Names

log = logging.getLogger(__name__)

BEAT_SECONDS = 2.0


class HostLoad:
    """How many sessions this worker process hosts, out of how many slots."""

    def __init__(self, slots: int = 0) -> None:
        self.slots = slots
        self._hosted = 0
        self._lock = threading.Lock()

    @property
    def hosted(self) -> int:
        return self._hosted

    @contextmanager
    def hosting(self) -> Iterator[None]:
        with self._lock:
            self._hosted += 1
        try:
            yield
        finally:
            with self._lock:
                self._hosted -= 1


def advertise(
    client: redis.Redis, names: Names, worker_id: str, load: HostLoad, stop: threading.Event
) -> None:
    """Keep this host's entry in the hosts hash fresh until ``stop``; then withdraw it, so a
    draining host no longer counts as capacity."""
    key = names.session_hosts()
    while True:
        try:
            client.hset(key, worker_id, host_entry(load.slots, load.hosted))
        except redis.RedisError as exc:
            log.warning("host advertisement not written: %s", exc)
        if stop.wait(BEAT_SECONDS):
            break
    try:
        client.hdel(key, worker_id)
    except redis.RedisError as exc:
        log.warning("host advertisement not withdrawn (it expires): %s", exc)
