"""Connections to the addresses an egress check vetted, not to a second lookup of the name.

A name can answer a public address to the check and an internal one to the connection's own lookup
(DNS rebinding). These network backends, for httpcore's pool (under the light MCP client) and
httpcore2's (under httpx2, fastmcp's client), connect to the vetted addresses in order whatever host
they are asked for: a pool using one serves one vetted origin. The URL keeps the name, so the Host
header, the TLS server name (SNI) and the certificate check are the name's."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import httpcore2

from services.egress import IPAddress


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
            except (
                httpcore.ConnectError,
                httpcore.ConnectTimeout,
                httpcore2.ConnectError,
                httpcore2.ConnectTimeout,
            ):
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


class PinnedBackend(_Pinned, httpcore.AsyncNetworkBackend):
    """For ``httpcore.AsyncConnectionPool(network_backend=...)``."""

    def __init__(self, addresses: Sequence[IPAddress]) -> None:
        super().__init__(addresses, httpcore.AnyIOBackend())


class PinnedBackend2(_Pinned, httpcore2.AsyncNetworkBackend):
    """For ``httpcore2.AsyncConnectionPool(network_backend=...)``."""

    def __init__(self, addresses: Sequence[IPAddress]) -> None:
        super().__init__(addresses, httpcore2.AnyIOBackend())
