"""Connections to the addresses an egress check vetted, not to a second lookup of the name.

A name can answer a public address to the check and an internal one to the connection's own lookup
(DNS rebinding). This network backend, for httpcore2's pool (under httpx2, fastmcp's and authlib's
client), connects to the vetted addresses in order whatever host it is asked for: a pool using one
serves one vetted origin. The URL keeps the name, so the Host header, the TLS server name (SNI) and
the certificate check are the name's. The light MCP client's pool (``services.lean_http``) does the
same on its own.

``VettedTransport`` is for clients that reach several tenant-named origins (webhook delivery, OAuth
discovery and token calls): each origin is checked once, and its requests go to what that check
vetted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2

from schemas.settings import Settings
from services.egress import IPAddress, Resolver, check_endpoint, resolve


class _Pinned:
    def __init__(self, addresses: Sequence[IPAddress], backend: Any) -> None:
        if not addresses:
            raise ValueError("no vetted address to connect to")
        self.addresses = tuple(str(address) for address in addresses)
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> Any:
        """A connection to the first vetted address that answers (the last failure otherwise)."""
        for address in self.addresses[:-1]:
            try:
                return await self._backend.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout):
                continue
        return await self._backend.connect_tcp(
            self.addresses[-1], port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> Any:
        raise ConnectionRefusedError("a pinned connection goes to a vetted TCP address only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class PinnedBackend2(_Pinned, httpcore2.AsyncNetworkBackend):
    """For ``httpcore2.AsyncConnectionPool(network_backend=...)``."""

    def __init__(self, addresses: Sequence[IPAddress]) -> None:
        super().__init__(addresses, httpcore2.AnyIOBackend())


class PinnedTransport2(httpx2.AsyncHTTPTransport):
    """httpx2's transport to one vetted origin."""

    def __init__(self, addresses: Sequence[IPAddress]) -> None:
        ssl_context = httpx2.create_ssl_context()
        super().__init__(verify=ssl_context)
        # httpx2's transport takes no network backend: its pool is replaced by one that has it.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context, network_backend=PinnedBackend2(addresses)
        )


# scheme, user, password, host, port: a URL with credentials is not the same origin, for the check.
_Origin = tuple[str, str | None, str | None, str | None, int | None]


class VettedTransport(httpx2.AsyncBaseTransport):
    """httpx2's transport for tenant-named URLs: the first request to an origin (or ``vet``) runs
    the egress check on its name, and that origin's requests then go to the addresses it vetted
    for as long as this transport lives (one delivery, one OAuth flow). A refused URL raises
    EgressRefused. Redirects are the client's to refuse (``follow_redirects=False``)."""

    def __init__(self, settings: Settings, resolver: Resolver = resolve) -> None:
        self.settings = settings
        self.resolver = resolver
        self._addresses: dict[_Origin, list[IPAddress]] = {}
        self._transports: dict[_Origin, PinnedTransport2] = {}
        self._lock = asyncio.Lock()

    async def vet(self, url: str, field: str = "url") -> list[IPAddress]:
        """The addresses ``url``'s origin may be reached at (checked on first use)."""
        origin = _origin(url)
        async with self._lock:
            if origin not in self._addresses:
                self._addresses[origin] = await check_endpoint(url, self.settings, field, self.resolver)
            return self._addresses[origin]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = str(request.url)
        addresses = await self.vet(url)
        origin = _origin(url)
        transport = self._transports.get(origin)
        if transport is None:
            transport = self._transports[origin] = PinnedTransport2(addresses)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self._transports.values():
            await transport.aclose()
        self._transports.clear()


def _origin(url: str) -> _Origin:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1  # the check refuses it
    scheme = parts.scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme)
    return scheme, parts.username, parts.password, parts.hostname, port or default


class VettedClient(httpx2.AsyncClient):
    """An httpx2 client for tenant-named URLs, through a VettedTransport; redirects not followed
    (the check vetted the URL asked for, not where a server sends us)."""

    def __init__(self, settings: Settings, resolver: Resolver = resolve, timeout: float = 15.0) -> None:
        self.vetting = VettedTransport(settings, resolver)
        super().__init__(transport=self.vetting, timeout=timeout, follow_redirects=False)

    async def vet(self, url: str, field: str) -> list[IPAddress]:
        """Checks ``url`` now (EgressRefused naming ``field``); its requests then go where it vetted."""
        return await self.vetting.vet(url, field)
