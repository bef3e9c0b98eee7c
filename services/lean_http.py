"""HTTP/1.1 to one vetted origin on asyncio's own transports, parsed by httptools (llhttp, in C).

The light MCP client's POST through httpcore was ~a third of the tools worker's event-loop time per
gateway call (bench/README.md, gateway round 8): anyio's stream wrappers and cancel scopes, sniffio
look-ups, h11's state machine and a readability poll of the socket before each reuse, for a request
of a few hundred bytes. Here a request is one ``transport.write`` and its response is parsed as it
arrives by the parser uvicorn uses.

As the httpcore pool it replaces (``services.pinned_network`` once held it): connections go to the
vetted addresses in order whatever the URL names, the Host header, SNI and the certificate check
are the name's; kept-alive connections are reused, one request at a time each, at most
``MAX_CONNECTIONS`` at once (httpcore's default), and a connection whose response was not read to
its end (a reply cut short, a cancelled call) is closed, never reused. Header values with CR, LF or
NUL are refused before anything is sent (h11 refused them too). Failures are ``OSError``s.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

# httpcore's pool default, kept: a tenant's server sees no more connections than before.
MAX_CONNECTIONS = 10
# Unread body bytes at which a connection stops reading until the caller takes them.
HIGH_WATER = 256 * 1024
# A response's status line and headers, at most (h11's limit under httpcore, which this replaced):
# the parser keeps a header it has not finished in memory, so a server's endless header would grow
# the worker until the call's timeout.
MAX_HEAD_BYTES = 16 * 1024
_FORBIDDEN = (b"\r", b"\n", b"\0")
# Statuses whose responses have no body (and no close-delimited one either).
_NO_BODY = frozenset({204, 304})


class HttpFailure(ConnectionError):
    """The server's answer broke HTTP/1.1 or the connection ended mid-response."""


@dataclass(frozen=True)
class Reply:
    """A response read whole."""

    status: int
    headers: list[tuple[bytes, bytes]]
    content: bytes


class Response:
    """A response whose headers are in and whose body arrives through ``aiter_stream``."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._wake: asyncio.Future[None] | None = None
        self.complete = False
        self.error: Exception | None = None
        # Whether the caller read the body to its end.
        self.read_out = False

    async def aiter_stream(self) -> AsyncIterator[bytes]:
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                self._connection.resume()
                yield chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                self.read_out = True
                return
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None

    def _push(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER:
            self._connection.pause()
        self._notify()

    def _finish(self, error: Exception | None = None) -> None:
        if self.complete or self.error is not None:
            return
        if error is None:
            self.complete = True
        else:
            self.error = error
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


class _Connection(asyncio.Protocol):
    """One kept-alive connection; parser callbacks (``on_*``) fill the response in progress."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = False
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._headers_in: asyncio.Future[None] | None = None
        self._until_close = False
        self._paused = False
        self._head_bytes = 0
        # Bytes read since the body last moved: after the head, a server may send chunk extensions
        # or trailers without end, which the parser keeps in memory as it does an unfinished header.
        self._idle_bytes = 0
        self._body_moved = False

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._response is None or self._response.complete:
            self.close()  # bytes nobody asked for: the connection is not HTTP any more
            return
        self._body_moved = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpFailure(f"the server's response is not HTTP/1.1: {exc}"))
            return
        if not self._headers_done():
            # Counted after the feed: a read that ends the head may carry any amount of body.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(HttpFailure(f"the server's response head is over {MAX_HEAD_BYTES} bytes"))
        elif self._body_moved:
            self._idle_bytes = 0
        else:
            self._idle_bytes += len(data)
            if self._idle_bytes > MAX_HEAD_BYTES:
                self._fail(
                    HttpFailure(f"the server sent over {MAX_HEAD_BYTES} bytes that are neither body nor end")
                )

    def eof_received(self) -> bool | None:
        return None  # asyncio closes the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is not None and self._until_close and self._headers_done():
            response._finish()  # a body delimited by the connection's end
        else:
            self._fail(
                HttpFailure(f"the server closed the connection mid-response{f': {exc}' if exc else ''}")
            )

    # the parser's side
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        response.status = self._parser.get_status_code()
        names = {name.lower() for name, _ in response.headers}
        self._until_close = (
            response.status not in _NO_BODY
            and b"content-length" not in names
            and b"transfer-encoding" not in names
        )
        if self._headers_in is not None and not self._headers_in.done():
            self._headers_in.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        self._body_moved = True
        self._response._push(bytes(body))

    def on_message_complete(self) -> None:
        assert self._response is not None
        self.keep_alive = self._parser.should_keep_alive()
        self._response._finish()

    # the pool's side
    async def send(self, head: bytes, content: bytes) -> Response:
        """Writes the request and waits for the response's headers."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise HttpFailure("the server closed the kept-alive connection")
        response = self._response = Response(self)
        self._until_close = False
        self._head_bytes = self._idle_bytes = 0
        self.keep_alive = False
        self._headers_in = asyncio.get_running_loop().create_future()
        self.transport.write(head + content if len(content) < 65536 else head)
        if len(content) >= 65536:
            self.transport.write(content)
        await self._headers_in
        return response

    def reusable(self) -> bool:
        response = self._response
        return not self.closed and self.keep_alive and response is not None and response.read_out

    def release(self) -> None:
        self._response = None
        self._headers_in = None

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _headers_done(self) -> bool:
        return self._headers_in is not None and self._headers_in.done()

    def _fail(self, error: Exception) -> None:
        self.closed = True
        if self._headers_in is not None and not self._headers_in.done():
            self._headers_in.set_exception(error)
            self._headers_in.exception()  # read: a cancelled sender leaves it unawaited
        if self._response is not None:
            self._response._finish(error)
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Kept-alive connections to ``url``'s origin, made to ``addresses`` (vetted) in order."""

    def __init__(self, url: str, addresses: Sequence[str], ssl_context: ssl.SSLContext) -> None:
        if not addresses:
            raise ValueError("no vetted address to connect to")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpFailure(f"not an http(s) URL: {url!r}")
        self._tls = ssl_context if parts.scheme == "https" else None
        self._server_name = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._addresses = tuple(addresses)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        default = (self._tls and self._port == 443) or (not self._tls and self._port == 80)
        authority = host if default else f"{host}:{self._port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._target = target.encode()
        self._host = authority.encode("idna" if not authority.isascii() else "ascii")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._closed = False

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, headers: Sequence[tuple[bytes, bytes]], content: bytes
    ) -> AsyncIterator[Response]:
        """The response to one request, its body to be read inside the block; a response not read
        to its end closes its connection."""
        head = self._head(method, headers, content)
        async with self._slots:
            connection = await self._checkout()
            try:
                response = await connection.send(head, content)
                yield response
            except BaseException:
                connection.close()
                raise
            if connection.reusable() and not self._closed:
                connection.release()
                self._idle.append(connection)
            else:
                connection.close()

    def _head(self, method: str, headers: Sequence[tuple[bytes, bytes]], content: bytes) -> bytes:
        lines = [
            b"%s %s HTTP/1.1" % (method.encode("ascii"), self._target),
            b"host: " + self._host,
            b"content-length: %d" % len(content),
        ]
        for name, value in headers:
            if any(bad in name or bad in value for bad in _FORBIDDEN) or b":" in name:
                raise HttpFailure(f"a request header is not valid HTTP: {name!r}")
            lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _checkout(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return await self._connect()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for address in self._addresses:
            try:
                _, connection = await loop.create_connection(
                    _Connection,
                    address,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._server_name if self._tls else None,
                )
                return connection
            except OSError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
