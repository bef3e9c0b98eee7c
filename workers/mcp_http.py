"""HTTP to tenants' MCP servers, which may be hostile: connections go to the addresses the egress
check vetted (``services/pinned_network.py``), and a reply is read up to a byte limit
(``AGENTAPI_MCP_MAX_REPLY_BYTES``), so an endless event or body cannot grow the worker's memory.
For fastmcp's transports (their httpx2 client factory); the light client's pool is
``services.lean_http``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any

import httpx2

from services.egress import IPAddress
from services.pinned_network import PinnedTransport2


class ReplyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the MCP server's reply is larger than {limit} bytes (AGENTAPI_MCP_MAX_REPLY_BYTES)"
        )


async def bounded(chunks: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    """``chunks`` as they come, until they add up to more than ``limit`` bytes: then ReplyTooLarge."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ReplyTooLarge(limit)
        yield chunk


class FastmcpHttp:
    """The ``httpx_client_factory`` of fastmcp's HTTP transports for one server: its clients connect
    to the vetted addresses and read each POST's reply up to ``limit`` bytes. fastmcp reports a reply
    cut short only as a generic error, so the factory remembers it (``oversized``).

    The event stream a session keeps open (a GET: an SSE server's replies all come on it) may carry
    ``limit`` bytes after each request the client sends, as a POST's reply may: a server streaming
    small events without end (progress, log notifications, comments) is cut off there instead of
    feeding the worker, and a progress event per notification to the session's log, until the
    call's timeout. Only the client's own requests renew the allowance: its answers to the
    server's requests (a ``ping`` flood) do not."""

    def __init__(self, addresses: Sequence[IPAddress], limit: int) -> None:
        self.addresses = addresses
        self.limit = limit
        self.oversized: str | None = None
        # Bytes the session's event stream carried since the client's last request.
        self.streamed = 0

    def __call__(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
        **_: Any,
    ) -> httpx2.AsyncClient:
        # The MCP SDK follows redirects itself (within the endpoint's origin), whatever the client's
        # follow_redirects, which fastmcp passes; the timeout is the SDK's default when none is given.
        return httpx2.AsyncClient(
            headers=headers,
            auth=auth,
            timeout=timeout or httpx2.Timeout(30.0, read=300.0),
            transport=_PinnedTransport(self),
        )


class _PinnedTransport(PinnedTransport2):
    def __init__(self, factory: FastmcpHttp) -> None:
        super().__init__(factory.addresses)
        self._factory = factory

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST" and _is_request(request.content):
            self._factory.streamed = 0
        response = await super().handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        # A GET is the server's event stream, open as long as the session.
        stream = _BoundedStream if request.method == "POST" else _MeteredStream
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=stream(response.stream, self._factory),
            extensions=response.extensions,
        )


def _is_request(body: bytes) -> bool:
    """Whether a POST's body is a JSON-RPC request (not a notification, nor an answer)."""
    try:
        message = json.loads(body)
    except ValueError:
        return False
    return isinstance(message, dict) and "method" in message and "id" in message


class _Oversized(httpx2.StreamError):
    """What fastmcp's transport sees when a reply is too long: the SDK answers the waiting request
    with an error for a stream error (a transport error would end its writer task instead, and the
    request would wait for its timeout)."""


class _BoundedStream(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream, factory: FastmcpHttp) -> None:
        self._stream = stream
        self._factory = factory

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in bounded(self._stream, self._factory.limit):
                yield chunk
        except ReplyTooLarge as exc:
            self._factory.oversized = str(exc)
            raise _Oversized(str(exc)) from exc

    async def aclose(self) -> None:
        await self._stream.aclose()


class _MeteredStream(_BoundedStream):
    """An event stream, counted against the allowance the client's requests renew."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        factory = self._factory
        async for chunk in self._stream:
            factory.streamed += len(chunk)
            if factory.streamed > factory.limit:
                factory.oversized = str(ReplyTooLarge(factory.limit))
                raise _Oversized(factory.oversized)
            yield chunk
