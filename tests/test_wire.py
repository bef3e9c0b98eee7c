"""events/wire.py on real Redis: a pipeline's answers are those of redis-py's
``Pipeline.execute(raise_on_error=False)``, refusals and connection errors included, and a
connection Redis dropped is replaced as redis-py's pool replaces it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import hiredis
import pytest
import redis.asyncio
from redis.asyncio.client import Pipeline
from redis.client import NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError

from events import wire
from events.connection import batch_redis

Queue = Callable[[Pipeline], object]
LUA_NESTED_ERROR = "return {1, redis.error_reply('nested refusal'), 'x'}"
LUA_ERROR = "return redis.error_reply('WRONGTYPE from a script')"


def keys(prefix: str) -> list[str]:
    return [f"{prefix}{name}" for name in ("text", "n", "s", "h", "big")]


def commands(prefix: str) -> Queue:
    """Commands whose answers are the same on every run from no keys."""
    text, counter, stream, fields, big = keys(prefix)

    def queue(pipe: Pipeline) -> None:
        pipe.set(text, "värde")
        pipe.get(text)
        pipe.execute_command("GET", text, **{NEVER_DECODE: []})
        pipe.incrby(counter, 5)
        pipe.hincrby(fields, "f", 2)
        pipe.hgetall(fields)
        pipe.expire(text, 100)
        pipe.xadd(stream, {"f": "é"}, id="1-1")
        pipe.xadd(stream, {"f": "é"}, id="1-1")  # refused: not above the last id
        pipe.xrange(stream)
        pipe.incr(text)  # refused: not a number
        pipe.hget(text, "f")  # refused: WRONGTYPE
        pipe.evalsha("0" * 40, 0)  # refused: NOSCRIPT
        pipe.eval(LUA_NESTED_ERROR, 0)
        pipe.eval(LUA_ERROR, 0)
        pipe.mget([])  # refused, answered by its EMPTY_RESPONSE
        pipe.mget([text, counter])
        pipe.publish(f"{prefix}channel", "x")
        pipe.set(big, "ключ" * 100_000)  # several reads
        pipe.strlen(big)
        pipe.get(big)
        pipe.ttl(text)

    return queue


def shape(answer: Any) -> Any:
    """Exceptions compare by identity: by class and text here, inside lists too."""
    if isinstance(answer, BaseException):
        return (type(answer), str(answer))
    if isinstance(answer, list):
        return [shape(item) for item in answer]
    return answer


async def both(client: redis.asyncio.Redis, queue: Queue, fresh: list[str]) -> tuple[Any, Any]:
    """(redis-py's answers, ours) to ``queue``'s commands, each on a pipeline of ``client`` with
    the keys ``fresh`` deleted before."""
    answers = []
    run: Callable[[Pipeline], Awaitable[list[Any]]]
    for run in (lambda pipe: pipe.execute(raise_on_error=False), wire.execute):
        await client.delete(*fresh)
        async with client.pipeline(transaction=False) as pipe:
            queue(pipe)
            try:
                answers.append(shape(await run(pipe)))
            except Exception as exc:
                answers.append(shape(exc))
    return answers[0], answers[1]


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode", [True, False])
async def test_same_answers_as_redis_py(redis_url: str, protocol: int, decode: bool) -> None:
    prefix = f"agentapi-test-wire-{uuid.uuid4().hex[:8]}:"
    client = redis.asyncio.Redis.from_url(redis_url, protocol=protocol, decode_responses=decode)
    try:
        theirs, ours = await both(client, commands(prefix), keys(prefix))
        assert ours == theirs
        refused = [answer for answer in ours if isinstance(answer, tuple) and isinstance(answer[0], type)]
        assert {kind.__name__ for kind, _ in refused} == {"ResponseError", "NoScriptError"}
        assert ours[2] == "värde".encode()  # never decoded
        assert ours[15] == []  # MGET of no keys: its empty answer
    finally:
        await client.delete(*keys(prefix))
        await client.aclose()


async def test_a_dropped_connection_fails_one_pipeline_and_is_replaced(redis_url: str) -> None:
    """As after a Redis restart: the pool's idle connection was closed by the server. As with
    redis-py (whose pool does not look for that while maintenance notifications are on), the next
    pipeline may fail with the connection's error; the one after goes on a new connection."""
    admin = redis.asyncio.Redis.from_url(redis_url)
    outcomes = []
    run: Callable[[Pipeline], Awaitable[list[Any]]]
    for run in (lambda pipe: pipe.execute(raise_on_error=False), wire.execute):
        client = batch_redis(redis_url, wait_seconds=5)
        try:
            ids = []
            for _ in range(3):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.client_id()
                    try:
                        ids.append(await run(pipe))
                    except RedisConnectionError as exc:
                        ids.append(shape(exc))
                if len(ids) == 1:
                    assert await admin.client_kill_filter(_id=ids[0][0]) == 1
                    await asyncio.sleep(0.1)  # the close reaches the idle connection
            outcomes.append(ids)
        finally:
            await client.aclose()
    await admin.aclose()
    theirs, ours = outcomes
    # The pipeline after the drop: the connection's error, or (where the pool saw the close
    # first) a new connection; either with both, depending on timing.
    failed = (RedisConnectionError, "Connection closed by server.")
    assert theirs[1] == failed or theirs[1] != theirs[0]
    assert ours[1] == failed or ours[1] != ours[0]
    assert ours[2] != ours[0]


class FakeRedis:
    """A server that answers the handshake with OK and each GET with the next of ``replies``; once
    they are used up it says nothing more, or closes the connection (``then_close``). Counts its
    connections."""

    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self.then_close = False
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        requests = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                requests.feed(data)
                while (command := requests.gets()) is not False:
                    if command[0].upper() != b"GET":
                        writer.write(b"+OK\r\n")
                    elif self.replies:
                        writer.write(self.replies.pop(0))
                    elif self.then_close:
                        return
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRedis, str]]:
    server = FakeRedis()
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield server, f"redis://127.0.0.1:{port}/0?protocol=2"
    finally:
        listening.close()


def two_gets(pipe: Pipeline) -> None:
    pipe.get("a")
    pipe.get("b")


@pytest.mark.parametrize(
    ("replies", "error"),
    [
        ([b"$1\r\nx\r\n"], "Connection closed by server"),  # one reply of two, then the close
        ([b"-ERR max number of clients reached\r\n"], "max number of clients"),  # the connection's error
        ([b"$1\r\nx\r\n", b"!"], "Protocol error"),  # not RESP
    ],
)
async def test_same_connection_errors_as_redis_py(
    fake: tuple[FakeRedis, str], replies: list[bytes], error: str
) -> None:
    server, url = fake
    server.then_close = True
    client = batch_redis(url, wait_seconds=5)
    try:
        outcomes = []
        for _ in range(2):  # redis-py's, then ours: each on a new connection
            server.replies = list(replies)
            outcomes.append(await both_one(client, two_gets, len(outcomes)))
        theirs, ours = outcomes
        assert ours == theirs
        assert (
            issubclass(ours[0], RedisConnectionError | redis.exceptions.InvalidResponse) and error in ours[1]
        )
    finally:
        await client.aclose()


async def both_one(client: redis.asyncio.Redis, queue: Queue, which: int) -> Any:
    async with client.pipeline(transaction=False) as pipe:
        queue(pipe)
        try:
            return shape(await (wire.execute(pipe) if which else pipe.execute(raise_on_error=False)))
        except Exception as exc:
            return shape(exc)


async def test_a_pipeline_cut_short_leaves_no_connection_with_replies_unread(
    fake: tuple[FakeRedis, str],
) -> None:
    """The batch's deadline ends a pipeline that has one reply of two: its connection is closed,
    so the next pipeline cannot take the late reply for its own."""
    server, url = fake
    server.replies = [b"$1\r\nx\r\n"]
    client = batch_redis(url, wait_seconds=5)
    try:
        async with client.pipeline(transaction=False) as pipe:
            two_gets(pipe)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await wire.execute(pipe)
        server.replies = [b"$1\r\ny\r\n"]
        async with client.pipeline(transaction=False) as pipe:
            pipe.get("a")
            assert await wire.execute(pipe) == ["y"]
        assert server.connections == 2
    finally:
        await client.aclose()


async def test_what_it_does_not_cover_goes_through_redis_py(redis_url: str) -> None:
    """A transaction, or a client that retries, answers as ``Pipeline.execute`` does."""
    key = f"agentapi-test-wire-{uuid.uuid4().hex[:8]}"
    retrying = redis.asyncio.Redis.from_url(redis_url, decode_responses=True, retry_on_timeout=True)
    try:
        async with retrying.pipeline(transaction=True) as pipe:
            pipe.set(key, "1")
            pipe.incr(key)
            assert await wire.execute(pipe) == [True, 2]
        async with retrying.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.hget(key, "f")
            answers = await wire.execute(pipe)
        assert answers[0] == 3 and isinstance(answers[1], redis.exceptions.ResponseError)
    finally:
        await retrying.delete(key)
        await retrying.aclose()
