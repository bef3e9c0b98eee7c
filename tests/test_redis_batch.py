"""events/batch.py on real Redis: concurrent callers share a pipeline, each gets its own replies
and only its own errors."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from events.batch import RedisBatch
from events.connection import batch_redis

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
        # A script this Redis has never seen (its text is new): sent as text once, by its SHA1 after.
        source = f"return ARGV[1] .. KEYS[1] -- {uuid.uuid4()}"
        assert await client.script_exists(hashlib.sha1(source.encode()).hexdigest()) == [False]
        assert await batch.run_script(source, ["k"], ["x"]) == "xk"
        assert await client.script_exists(hashlib.sha1(source.encode()).hexdigest()) == [True]
        assert await batch.run_script(source, ["k2"], ["y"]) == "yk2"
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
    # No retries: redis-py's default three, with jittered back-off, can outlast the batch's deadline.
    port_with_nothing = redis.asyncio.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    batch = RedisBatch(port_with_nothing)
    try:
        with pytest.raises(RedisConnectionError):
            await asyncio.gather(
                batch.execute(lambda pipe: pipe.get("a")), batch.execute(lambda pipe: pipe.get("b"))
            )
    finally:
        await port_with_nothing.aclose()


async def test_a_redis_that_never_answers_is_every_callers_timeout() -> None:
    """The batch's client has no per-reply socket timeout; the pipeline's deadline stands in for it."""

    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = batch_redis(f"redis://127.0.0.1:{port}/0", wait_seconds=1)
    batch = RedisBatch(silent, deadline=0.5)
    try:
        answers = await asyncio.gather(
            batch.execute(lambda pipe: pipe.get("a")),
            batch.execute(lambda pipe: pipe.get("b")),
            return_exceptions=True,
        )
        assert all(isinstance(answer, RedisTimeoutError) for answer in answers), answers
    finally:
        await silent.aclose()
        server.close()
        await server.wait_closed()


async def test_counts_of_a_pipeline_go_as_one_increment_that_fails_no_caller() -> None:
    prefix = f"agentapi-test-batch-{uuid.uuid4().hex[:8]}:"
    client = CountingRedis.from_url(URL, decode_responses=True)
    batch = RedisBatch(client)

    def publish(pipe: Any, n: int) -> None:
        pipe.set(f"{prefix}v{n}", n)
        batch.hincrby(f"{prefix}counts", "published", n)

    try:
        before = CountingRedis.pipelines
        replies = await asyncio.gather(
            *(batch.execute(lambda pipe, n=n: publish(pipe, n)) for n in range(1, 11))
        )
        assert CountingRedis.pipelines - before == 1
        # Each caller gets only its own replies; the counter's reply is nobody's.
        assert replies == [[True]] * 10
        assert await client.hget(f"{prefix}counts", "published") == "55"
        # A count made outside any caller's commands still goes, in a pipeline of its own.
        batch.hincrby(f"{prefix}counts", "published", 5)
        await asyncio.sleep(0.1)
        assert await client.hget(f"{prefix}counts", "published") == "60"
        # A counter Redis refuses (the key holds text) is no caller's error.
        await client.set(f"{prefix}text", "not a hash")
        assert await batch.execute(
            lambda pipe: (pipe.get(f"{prefix}v1"), batch.hincrby(f"{prefix}text", "f", 1))
        ) == ["1"]
    finally:
        await client.delete(f"{prefix}counts", f"{prefix}text", *(f"{prefix}v{n}" for n in range(1, 11)))
        await client.aclose()
