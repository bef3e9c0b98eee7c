"""The batch's connections put the same bytes on the wire as redis-py's own packing."""

from __future__ import annotations

import enum
import random
from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from events.connection import batch_redis
from events.packing import LeanPacking, lean_packing


class Kind(enum.IntEnum):
    RAW = 1


class Text(str):
    pass


FLOATS = [0.0, -0.0, 0.1, 1 / 3, 1e20, 1e-7, 2.5e-300, 1e16, 5e-324, 1.7976931348623157e308]
FLOATS += [
    float("inf"),
    float("-inf"),
    float("nan"),
    *(random.Random(7).uniform(-1e9, 1e9) for _ in range(200)),
]

COMMANDS: list[tuple[Any, ...]] = [
    ("SET", "k", *FLOATS, -(2**70), -1, 0),
    ("CLIENT ID",),
    ("SET", Text("ключ"), Kind.RAW),
    ("XADD", "agentapi:session:1:input", "*", "kind", "raw", "payload", '{"content":"é\\u001b[A"}'),
    ("EVALSHA", "0123abcd", 2, "k1", "k2", 60, -1, 6000, 1.5, 2**70),
    ("SCRIPT LOAD", "return 1"),
    (b"CONFIG GET", b"maxmemory"),
    (b"GET", bytearray(b"k"), memoryview(b"v" * 10_000)),
    ("SET", "ключ", "x" * 100_000),
]


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])  # hiredis's packer, then ours alone
def test_same_bytes_as_redis_py(encoding: str) -> None:
    theirs, ours = Connection(encoding=encoding), lean_packing(Connection)(encoding=encoding)
    commands = COMMANDS if encoding == "utf-8" else [c for c in COMMANDS if c[0] != "SET" or "ключ" not in c]
    for command in commands:
        assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))
    assert b"".join(ours.pack_commands(commands)) == b"".join(theirs.pack_commands(commands))


@pytest.mark.parametrize(
    ("value", "error"),
    [(True, DataError), (None, DataError), (object(), DataError), ("\udc80", UnicodeEncodeError)],
)
def test_same_refusals(value: object, error: type[Exception]) -> None:
    theirs, ours = Connection(), lean_packing(Connection)()
    for connection in (theirs, ours):
        with pytest.raises(error):
            connection.pack_command("SET", "k", value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6379/0", SSLConnection),
        ("unix:///run/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_keeps_the_urls_transport(url: str, base: type) -> None:
    cls = batch_redis(url, wait_seconds=1).connection_pool.connection_class
    assert issubclass(cls, LeanPacking) and issubclass(cls, base)


async def test_round_trip_through_redis(redis_url: str) -> None:
    client = batch_redis(redis_url, wait_seconds=5)
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.set("agentapi-test:packing", "ключ " * 3000)
            pipe.get("agentapi-test:packing")
            pipe.delete("agentapi-test:packing")
            assert await pipe.execute() == [True, "ключ " * 3000, 1]
    finally:
        await client.aclose()
