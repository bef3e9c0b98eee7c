"""The batch's connections put the same bytes on the wire as redis-py's own packing."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from events.connection import batch_redis
from events.packing import LeanPacking, lean_packing

COMMANDS: list[tuple[Any, ...]] = [
    ("XADD", "agentapi:session:1:input", "*", "kind", "raw", "payload", '{"content":"é\\u001b[A"}'),
    ("EVALSHA", "0123abcd", 2, "k1", "k2", 60, -1, 6000, 1.5, 2**70),
    ("SCRIPT LOAD", "return 1"),
    (b"CONFIG GET", b"maxmemory"),
    (b"GET", bytearray(b"k"), memoryview(b"v" * 10_000)),
    ("SET", "ключ", "x" * 100_000),
]


def test_same_bytes_as_redis_py() -> None:
    theirs, ours = Connection(), lean_packing(Connection)()
    for command in COMMANDS:
        assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))
    assert b"".join(ours.pack_commands(COMMANDS)) == b"".join(theirs.pack_commands(COMMANDS))


@pytest.mark.parametrize("value", [True, None, object()])
def test_same_refusals(value: object) -> None:
    ours = lean_packing(Connection)()
    with pytest.raises(DataError):
        ours.pack_command("SET", "k", value)  # type: ignore[arg-type]


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
