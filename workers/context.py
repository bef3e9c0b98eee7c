"""What actors share inside one worker process: settings and clients, made once per process.

Async clients are created on first use inside Dramatiq's event-loop thread (the AsyncIO
middleware runs every async actor there), so they belong to the loop that uses them.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio
from redis.asyncio.client import Pipeline
from sqlalchemy.ext.asyncio import AsyncEngine

from events.batch import RedisBatch
from events.connection import batch_redis, dedicated_redis, pooled_redis
from events.envelope import NOTIFIED_TYPES, Event, EventType
from events.payloads import WebhookNotice
from events.publisher import queue_publish
from events.results import log_id_index, queue_result
from events.streams import Names
from schemas.db import open_engine
from schemas.settings import Settings
from workers.input_streams import InputStreams
from workers.placement import HostLoad

# Hundreds of session hosts in one process may want Redis at once: they queue, not fail.
REDIS_CONNECTION_WAIT_SECONDS = 20


@dataclass
class WorkerContext:
    settings: Settings
    names: Names = field(init=False)
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # Set when the worker process begins to stop: session hosts hand their sessions to other workers.
    draining: threading.Event = field(default_factory=threading.Event)
    # The sessions this process hosts out of its slots, advertised for placement and metrics.
    load: HostLoad = field(default_factory=HostLoad)
    _redis: redis.asyncio.Redis | None = None
    _batch: RedisBatch | None = None
    _engine: AsyncEngine | None = None
    _inputs: InputStreams | None = None

    def __post_init__(self) -> None:
        self.names = Names(self.settings.redis_prefix)

    @property
    def redis(self) -> redis.asyncio.Redis:
        if self._redis is None:
            self._redis = pooled_redis(self.settings.redis_url, wait_seconds=REDIS_CONNECTION_WAIT_SECONDS)
        return self._redis

    @property
    def batch(self) -> RedisBatch:
        """Result writes of the calls and hosts that finish in one loop turn, as one pipeline."""
        if self._batch is None:
            self._batch = RedisBatch(
                batch_redis(self.settings.redis_url, wait_seconds=REDIS_CONNECTION_WAIT_SECONDS)
            )
        return self._batch

    @property
    def inputs(self) -> InputStreams:
        """The hosted sessions' input streams, read together on a connection of their own."""
        if self._inputs is None:
            self._inputs = InputStreams(dedicated_redis(self.settings.redis_url))
        return self._inputs

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = open_engine(self.settings, pool_size=self.settings.db_pool_size)
        return self._engine

    async def emit(
        self, event: Event, *, reply_to: str | None = None, then: Callable[[Pipeline], None] | None = None
    ) -> str:
        """Report a result to the session's subscribers (and to the org's webhook subscribers).

        ``reply_to``: the request the event answers, whose caller waits (in the same round trip, first).
        ``then``: commands that follow the event (its audit record, counts), sent with its webhook
        notice, whose round trip comes after the log's anyway."""
        batch, maxlen = self.batch, self.settings.event_log_maxlen
        logged = await batch.execute(
            lambda pipe: queue_result(pipe, self.names, event, maxlen, reply_to, counts=batch)
        )
        stream_id = str(logged[log_id_index(reply_to)])
        notified = event.type in NOTIFIED_TYPES
        if notified or then is not None:

            def follow(pipe: Pipeline) -> None:
                if notified:
                    # The log position lets event sinks publish a session's events in log order.
                    notice = event.follow_up(
                        EventType.WEBHOOK_NOTIFY_REQUESTED,
                        WebhookNotice(event=event.to_wire(), stream_id=stream_id).payload(),
                    )
                    queue_publish(pipe, self.names, notice, counts=batch)
                if then is not None:
                    then(pipe)

            await batch.execute(follow)
        return stream_id


_context: WorkerContext | None = None


def set_context(context: WorkerContext) -> None:
    global _context
    _context = context


def current() -> WorkerContext:
    if _context is None:
        raise RuntimeError("worker context is not set up: start workers through workers.main.run_worker")
    return _context
