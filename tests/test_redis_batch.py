"""events/batch.py on real Redis: concurrent callers share a pipeline, each gets its own replies
and only its own errors."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from events.batch import RedisBatch, script

URL = "redis://127.0.0.1:6379/0"


class CountingRedis(redis.asyncio.Redis):
    """A client that counts the pipelines it runs."""

    pipelines = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        CountingRedis.pipelines += 1
        return super().pipeline(*args, **kwargs)


async def test_callers_of_one_loop_turn_share_a_pipeline_and_get_their_own_replies() -> None:
    prefix = f"agentapi-test-batch-{uuid.uuid4().hex[:8]}:"
    client = CountingRedis.from_url(URL, decode_responses=True)
    batch = RedisBatch(client)
    try:
        before = CountingRedis.pipelines
        replies = await asyncio.gather(
            *(
                batch.execute(lambda pipe, n=n: (pipe.incrby(f"{prefix}n", n), pipe.get(f"{prefix}n")))
                for n in range(1, 21)
            )
        )
        assert CountingRedis.pipelines - before == 1
        # In the order they were queued: each sees the counter right after its own increment.
        totals = [n * (n + 1) // 2 for n in range(1, 21)]
        assert replies == [[total, str(total)] for total in totals]
        assert await batch.execute(lambda pipe: script(pipe, "return ARGV[1] .. KEYS[1]", ["k"], ["x"])) == [
            "xk"
        ]
    finally:
        await client.delete(f"{prefix}n")
        await client.aclose()


async def test_a_failing_command_fails_only_its_caller() -> None:
    prefix = f"agentapi-test-batch-{uuid.uuid4().hex[:8]}:"
    client = redis.asyncio.Redis.from_url(URL, decode_responses=True)
    batch = RedisBatch(client)
    try:
        await client.set(f"{prefix}text", "not a number")

        def bad_argument(pipe: Any) -> None:
            raise ValueError("a caller's own bug")

        good, wrong_type, bug, also_good = await asyncio.gather(
            batch.execute(lambda pipe: pipe.set(f"{prefix}a", "1")),
            batch.execute(lambda pipe: pipe.incr(f"{prefix}text")),
            batch.execute(bad_argument),
            batch.execute(lambda pipe: pipe.get(f"{prefix}a")),
            return_exceptions=True,
        )
        assert good == [True] and also_good == ["1"]
        assert isinstance(wrong_type, ResponseError)
        assert isinstance(bug, ValueError)
    finally:
        await client.delete(f"{prefix}text", f"{prefix}a")
        await client.aclose()


async def test_no_redis_is_every_callers_error() -> None:
    port_with_nothing = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    batch = RedisBatch(port_with_nothing)
    try:
        with pytest.raises(RedisConnectionError):
            await asyncio.gather(
                batch.execute(lambda pipe: pipe.get("a")), batch.execute(lambda pipe: pipe.get("b"))
            )
    finally:
        await port_with_nothing.aclose()
