"""Dramatiq middleware timing every actor run into the cluster-wide histogram (events.metrics)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy

from events.metrics import observe
from events.streams import Names

log = logging.getLogger(__name__)


def record_duration(pipe: Any, names: Names, actor: str, seconds: float, outcome: str) -> None:
    """One run of ``actor`` (ok, failed or skipped) into ``pipe``, a sync or async pipeline."""
    observe(pipe, names, "actor_duration_seconds", seconds, actor=actor, outcome=outcome)


class ActorMetrics(Middleware):
    def __init__(self, client: redis.Redis, names: Names) -> None:
        self.client = client
        self.names = names
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._started[message.message_id] = time.monotonic()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._record(message, "failed" if exception is not None else "ok")

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._record(message, "skipped")

    def _record(self, message: MessageProxy, outcome: str) -> None:
        with self._lock:
            started = self._started.pop(message.message_id, None)
        if started is None:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                record_duration(pipe, self.names, message.actor_name, time.monotonic() - started, outcome)
                pipe.execute()
        except redis.RedisError as exc:
            # A metric is never worth failing the message over.
            log.warning("could not record the duration of %s: %s", message.actor_name, exc)
