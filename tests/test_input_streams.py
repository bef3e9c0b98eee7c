"""One reader for every hosted session's input stream, on real Redis."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio

from workers.input_streams import InputStreams

URL = "redis://127.0.0.1:6379/0"


async def test_each_session_gets_its_own_entries_in_order_from_where_it_left_off() -> None:
    prefix = f"agentapi-test-inputs-{uuid.uuid4().hex[:8]}:"
    writer = redis.asyncio.Redis.from_url(URL, decode_responses=True)
    inputs = InputStreams(redis.asyncio.Redis.from_url(URL, decode_responses=True))
    a, b = f"{prefix}a", f"{prefix}b"
    try:
        handled = await writer.xadd(a, {"n": "0"})
        await writer.xadd(a, {"n": "1"})
        from_a = inputs.subscribe(a, handled)  # a recovered host resumes after what it handled
        from_b = inputs.subscribe(b, "0-0")
        for n in range(2, 40):
            await writer.xadd(a, {"n": str(n)})
            await writer.xadd(b, {"n": str(-n)})
        async with asyncio.timeout(10):
            got_a = [(await from_a.get())[1]["n"] for _ in range(39)]
            got_b = [(await from_b.get())[1]["n"] for _ in range(38)]
        assert got_a == [str(n) for n in range(1, 40)]
        assert got_b == [str(-n) for n in range(2, 40)]

        # A stream nobody hosts any more is no longer read; the others still are.
        inputs.unsubscribe(b)
        await writer.xadd(b, {"n": "late"})
        await writer.xadd(a, {"n": "40"})
        async with asyncio.timeout(10):
            assert (await from_a.get())[1]["n"] == "40"
        # Written first, "late" came in the same read as "40" or an earlier one, had b been read.
        assert from_b.empty()
    finally:
        inputs.unsubscribe(a)
        await writer.delete(a, b)
        await writer.aclose()


async def test_the_reader_outlives_the_loss_of_its_connection() -> None:
    stream = f"agentapi-test-inputs-{uuid.uuid4().hex[:8]}:a"
    name = f"input-reader-{uuid.uuid4().hex[:8]}"
    writer = redis.asyncio.Redis.from_url(URL, decode_responses=True)
    inputs = InputStreams(redis.asyncio.Redis.from_url(URL, decode_responses=True, client_name=name))
    try:
        queue = inputs.subscribe(stream, "0-0")
        await writer.xadd(stream, {"n": "1"})
        async with asyncio.timeout(10):
            assert (await queue.get())[1]["n"] == "1"
        readers = [c for c in await writer.client_list() if c.get("name") == name]
        assert readers, "the reader holds a named connection"
        for reader in readers:
            await writer.client_kill_filter(_id=reader["id"])
        await writer.xadd(stream, {"n": "2"})
        async with asyncio.timeout(10):
            assert (await queue.get())[1]["n"] == "2", "the entry after the loss still arrives"
    finally:
        inputs.unsubscribe(stream)
        await writer.delete(stream)
        await writer.aclose()
