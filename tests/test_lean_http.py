"""services/lean_http.py against a real TCP server that answers what each test scripts: the body
forms HTTP/1.1 has, connection reuse and when a connection must not be reused, and the refusals."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from services.lean_http import MAX_HEAD_BYTES, HttpFailure, Pool

Answer = Callable[[bytes], bytes | None]


class Scripted:
    """A server whose answer to each request is ``answer(request)`` (None: close at once); it
    records the requests and how many connections were opened."""

    def __init__(self, answer: Answer, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                reply = self.answer(request)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(server: Scripted) -> AsyncIterator[Pool]:
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    # The URL's name is not what is connected to: the vetted address is.
    pool = Pool(f"http://mcp.example:{port}/mcp?x=1", ["127.0.0.1"], ssl.create_default_context())
    try:
        yield pool
    finally:
        await pool.aclose()
        listening.close()
        await listening.wait_closed()


async def fetch(pool: Pool, body: bytes = b"{}") -> tuple[int, dict[bytes, bytes], bytes]:
    async with pool.stream("POST", [(b"content-type", b"application/json")], body) as response:
        content = b"".join([chunk async for chunk in response.aiter_stream()])
    return response.status, dict(response.headers), content


def fixed(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_a_kept_alive_connection_carries_the_next_request() -> None:
    server = Scripted(lambda _: fixed(b'{"ok":1}', b"content-type: application/json\r\n"))
    async with serving(server) as pool:
        for _ in range(3):
            assert await fetch(pool, b'{"a":1}') == (
                200,
                {b"content-length": b"8", b"content-type": b"application/json"},
                b'{"ok":1}',
            )
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /mcp?x=1 HTTP/1.1\r\n")
    assert b"\r\nhost: mcp.example:" in first and first.endswith(b'\r\n\r\n{"a":1}')
    assert b"\r\ncontent-length: 7\r\n" in first


async def test_chunked_and_close_delimited_bodies() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    server = Scripted(lambda _: chunked)
    async with serving(server) as pool:
        assert (await fetch(pool))[2] == b"abcde"
        assert (await fetch(pool))[2] == b"abcde"
    assert server.connections == 1

    until_close = Scripted(lambda _: b"HTTP/1.1 200 OK\r\n\r\nall of it", close_after=True)
    async with serving(until_close) as pool:
        assert (await fetch(pool))[2] == b"all of it"
        assert (await fetch(pool))[2] == b"all of it"
    assert until_close.connections == 2


async def test_a_connection_the_server_closes_is_not_reused() -> None:
    server = Scripted(lambda _: fixed(b"x", b"connection: close\r\n"), close_after=True)
    async with serving(server) as pool:
        assert (await fetch(pool))[2] == b"x"
        await asyncio.sleep(0.05)
        assert (await fetch(pool))[2] == b"x"
    assert server.connections == 2


async def test_a_response_left_unread_closes_its_connection() -> None:
    server = Scripted(lambda _: fixed(b"0123456789" * 1000))
    async with serving(server) as pool:
        async with pool.stream("POST", [], b"") as response:
            async for _ in response.aiter_stream():
                break
        assert (await fetch(pool))[2] == b"0123456789" * 1000
    assert server.connections == 2


async def test_failures_are_os_errors() -> None:
    async with serving(Scripted(lambda _: None)) as pool:
        with pytest.raises(HttpFailure, match="closed the connection"):
            await fetch(pool)
    short = Scripted(lambda _: b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort", close_after=True)
    async with serving(short) as pool:
        with pytest.raises(HttpFailure):
            await fetch(pool)
    async with serving(Scripted(lambda _: b"SMTP ready\r\n\r\n")) as pool:
        with pytest.raises(HttpFailure, match=r"not HTTP/1\.1"):
            await fetch(pool)
    refused = Pool("http://mcp.example:9/mcp", ["127.0.0.1"], ssl.create_default_context())
    with pytest.raises(OSError):
        await fetch(refused)


async def test_header_values_that_would_split_the_request_are_refused() -> None:
    server = Scripted(lambda _: fixed(b"x"))
    async with serving(server) as pool:
        for header in [(b"mcp-name", b"echo\r\nx-injected: 1"), (b"mcp-name", b"a\nb"), (b"x\r\ny", b"1")]:
            with pytest.raises(HttpFailure, match="not valid HTTP"):
                async with pool.stream("POST", [header], b""):
                    pass
    assert server.requests == []


async def test_a_response_head_past_the_limit_is_refused_and_a_large_body_is_not() -> None:
    endless = b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * (4 * MAX_HEAD_BYTES)
    async with serving(Scripted(lambda _: endless)) as pool:
        with pytest.raises(HttpFailure, match="head is over"):
            await asyncio.wait_for(fetch(pool), 10)
    # A head under the limit, followed in the same writes by a body many times the limit.
    body = b"b" * (8 * MAX_HEAD_BYTES)
    padded = fixed(body, b"x-pad: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n")
    async with serving(Scripted(lambda _: padded)) as pool:
        assert await fetch(pool) == (
            200,
            {b"content-length": b"%d" % len(body), b"x-pad": b"a" * (MAX_HEAD_BYTES // 2)},
            body,
        )


async def test_endless_trailers_are_refused_and_small_chunks_are_not() -> None:
    """After the head, bytes that move no body (chunk extensions, trailers) are bounded like the head:
    counted from the first read that moves none (one read may carry a body and up to 256 KiB more)."""
    endless = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-trailer: "
    async with serving(Scripted(lambda _: endless + b"a" * (64 * MAX_HEAD_BYTES))) as pool:
        with pytest.raises(HttpFailure, match="neither body nor end"):
            await asyncio.wait_for(fetch(pool), 10)
    # A long body in one-byte chunks moves all the time: many times the limit in all.
    body = b"c" * (4 * MAX_HEAD_BYTES)
    chunked = b"".join(b"1\r\n%s\r\n" % bytes([byte]) for byte in body) + b"0\r\nx-trailer: t\r\n\r\n"
    async with serving(
        Scripted(lambda _: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked)
    ) as pool:
        status, _, content = await fetch(pool)
    assert (status, content) == (200, body)
