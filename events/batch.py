"""Redis commands of concurrent requests, sent to Redis as one pipeline.

Under load an ingress process has dozens of requests ready in one event-loop turn, each wanting a
command or two (its rate-limit check, its message, its audit event). Sent one at a time, every
command pays a pool checkout, a socket write and a read: together most of a message's CPU in the
profile. Collected during one loop turn and sent as one pipeline, they pay it once. Each caller
still awaits its own replies, so nothing is answered or acknowledged before Redis has it, and a
command's error reaches only the caller that queued it.

The batch's client has no socket timeout: redis-py arms one per reply it reads (and a
``wait_for`` task per write), which was a sixth of the pipeline's CPU with several replies per
request. One deadline covers a whole pipeline instead, and its expiry is the same
``redis.TimeoutError`` to every caller of that batch.

A pipeline goes by one write and its replies are read by one ``hiredis.Reader`` (``events.wire``):
redis-py's ``execute`` read each reply through a coroutine of its own, its per-message CPU.

Counters (``hincrby``) are summed over a pipeline: every published event added one HINCRBY to the
same field of the metrics hash, now a loop turn's events add one between them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from events import wire
from events.metrics import Increments

Queue = Callable[[Pipeline], object]
# A pipeline's deadline: connection checkout, write and every reply (redis-py's own socket timeout).
DEADLINE_SECONDS = 5.0


class RedisBatch:
    """One per process and event loop, with a Redis client of its own that has no socket timeout
    (``batch_redis``): ``deadline`` bounds each pipeline."""

    def __init__(self, redis: Redis, deadline: float = DEADLINE_SECONDS) -> None:
        self._redis = redis
        self._deadline = deadline
        self._waiting: list[tuple[Queue, asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        # Counter increments, added up until the next pipeline takes them.
        self._tallies = Increments()
        self._scheduled = self._building = False

    async def execute(self, queue: Queue, *, raise_on_error: bool = True) -> list[Any]:
        """Run the commands ``queue`` puts on a pipeline with those of the other callers of this
        loop turn; their replies, in order. Raises the connection's error, and the first of the
        replies that failed unless ``raise_on_error`` is false (then they are in the list): Redis
        carries out a pipeline's other commands all the same."""
        loop = asyncio.get_running_loop()
        self._schedule(loop)
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._waiting.append((queue, future))
        replies = await future
        failed = next((reply for reply in replies if isinstance(reply, Exception)), None)
        if failed is not None and raise_on_error:
            raise failed
        return replies

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        """Add ``amount`` to a counter in a hash with the next pipeline, in one HINCRBY with the
        other amounts of that field (``events.metrics.count`` takes the batch as its target). Its
        reply goes to no caller: a counter that cannot be kept fails no request."""
        self._tallies.hincrby(key, field, amount)
        if not self._building:  # else the pipeline being built takes it
            self._schedule(asyncio.get_running_loop())

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled:
            # call_soon runs after every callback already due in this turn, so the requests that
            # are ready now all get into this batch.
            self._scheduled = True
            loop.call_soon(self._send_waiting)

    async def run_script(self, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """A Lua script's reply. Sent by its SHA1 (EVALSHA): its text (600 bytes for the rate
        limits) was packed, sent and hashed by Redis with every request. A Redis that does not
        know it yet (first use, a restart, SCRIPT FLUSH) is sent the text once. Not redis-py's
        ``Script``: pipelined, that asks Redis whether it knows the script on every execute."""
        sha = _sha1(source)
        try:
            (reply,) = await self.execute(lambda pipe: pipe.evalsha(sha, len(keys), *keys, *args))
        except NoScriptError:
            (reply,) = await self.execute(lambda pipe: pipe.eval(source, len(keys), *keys, *args))
        return reply

    def _send_waiting(self) -> None:
        self._scheduled = False
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: Sequence[tuple[Queue, asyncio.Future[list[Any]]]]) -> None:
        spans: list[tuple[asyncio.Future[list[Any]], int, int]] = []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                self._building = True
                try:
                    spans = self._build(pipe, batch)
                finally:
                    self._building = False
                # After the queues: they may count what they queued.
                tallies, self._tallies = self._tallies, Increments()
                tallies.write(pipe)
                if pipe.command_stack:
                    replies = await wire.execute_within(pipe, self._deadline)
                else:
                    replies = []
        except Exception as exc:  # the connection's error is everyone's
            for future, _, _ in spans:
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:
            for future, _, _ in spans:
                future.cancel()
            raise
        for future, start, end in spans:
            if not future.done():  # else its caller was cancelled
                future.set_result(replies[start:end])

    @staticmethod
    def _build(
        pipe: Pipeline, batch: Sequence[tuple[Queue, asyncio.Future[list[Any]]]]
    ) -> list[tuple[asyncio.Future[list[Any]], int, int]]:
        """Each caller's commands on ``pipe``; (its future, its first and end command index)."""
        spans: list[tuple[asyncio.Future[list[Any]], int, int]] = []
        for queue, future in batch:
            start = len(pipe.command_stack)
            try:
                queue(pipe)
            except Exception as exc:  # a caller's bad command is its own error
                del pipe.command_stack[start:]
                if not future.done():
                    future.set_exception(exc)
                continue
            spans.append((future, start, len(pipe.command_stack)))
        return spans


@lru_cache(maxsize=64)
def _sha1(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()
