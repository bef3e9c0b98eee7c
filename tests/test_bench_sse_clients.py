"""The fan-out bench's C subscribers (`bench/sse_clients.c`): against a scripted server, they find
the reply however chunks and reads cut it, retry a 503 after its Retry-After and a stream that ends,
and count what failed for good; against a real ingress, every stream gets the echo agent's reply."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx

from bench.harness import start_echo
from bench.sse_clients import subscribers
from tests.fixtures.stack import Stack

MARKER = "fanout-test-marker"
REPLY = f'data: {{"role":"agent","content":"{MARKER}"}}\r\n\r\n'.encode()
REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 4\r\n\r\nbusy"
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

Handler = Callable[[int, asyncio.StreamWriter], Awaitable[None]]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def pieces(writer: asyncio.StreamWriter, data: bytes, cuts: list[int]) -> None:
    """``data`` in separate TCP segments cut at ``cuts``, each let out before the next is written."""
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        writer.write(data[start:end])
        await writer.drain()
        await asyncio.sleep(0.02)


@asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[str]:
    """A server that reads each request head and hands the n-th connection to ``handler``."""
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        number = accepted
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await reader.readuntil(b"\r\n\r\n")
        try:
            await handler(number, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/events"


async def test_reply_found_across_chunk_and_read_boundaries_after_retries() -> None:
    posted = asyncio.Event()
    hold = asyncio.Event()

    async def handler(n: int, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            writer.write(REFUSAL)
            return
        writer.write(STREAM_HEAD + chunk(b'data: {"role":"user","content":"earlier"}\r\n\r\n'))
        await writer.drain()
        if n == 2:  # ends its body before the reply: the client opens the stream again
            writer.write(b"0\r\n\r\n")
            return
        await posted.wait()
        # The reply line cut inside a chunk, two chunks, and the chunk-size lines themselves cut
        # across reads.
        body = chunk(REPLY[:9]) + chunk(REPLY[9:30]) + chunk(REPLY[30:])
        await pieces(writer, body, [1, 2, 7, 15, 20, len(body) - 3, len(body) - 1])
        await hold.wait()

    async with scripted(handler) as url, subscribers(url, {"X-Test": "1"}, 3, MARKER) as subs:
        assert await subs.connected(timeout=30) == 3
        before = time.time()
        posted.set()
        outcome = await subs.outcome(timeout=30)
        hold.set()
    assert len(outcome.received) == 3
    assert all(at >= before for at in outcome.received)
    assert outcome.failures == {}
    assert outcome.retries == {"HTTP 503": 1, "stream ended before the reply": 1}


async def test_refused_streams_fail_for_good_after_their_attempts() -> None:
    async def refuse(n: int, writer: asyncio.StreamWriter) -> None:
        writer.write(REFUSAL)

    async with scripted(refuse) as url, subscribers(url, {}, 2, MARKER, attempts=2) as subs:
        assert await subs.connected(timeout=30) == 0
        outcome = await subs.outcome(timeout=30)
    assert outcome.received == []
    assert outcome.failures == {"HTTP 503": 2}
    assert outcome.retries == {"HTTP 503": 2}


async def test_every_stream_of_a_real_ingress_gets_the_reply(stack: Stack) -> None:
    headers = stack.headers()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        session = await start_echo(client, stack, headers)
        url = f"{stack.base_url}/api/v1/sessions/{session}/events"
        async with subscribers(url, headers, 20, MARKER) as subs:
            assert await subs.connected(timeout=60) == 20
            posted = time.time()
            answer = await client.post(
                f"/api/v1/sessions/{session}/message", json={"content": MARKER}, headers=headers
            )
            assert answer.status_code == 200, answer.text
            outcome = await subs.outcome(timeout=60)
    assert len(outcome.received) == 20
    assert all(at >= posted for at in outcome.received)
    assert outcome.failures == {}
