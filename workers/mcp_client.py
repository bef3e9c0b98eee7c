"""Talking to a tenant's MCP server from a tools worker: one fastmcp Client per configuration,
reused across calls, with a call timeout, retries for connection failures, and the egress check
repeated right before connecting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx2
from fastmcp import Client
from fastmcp.client.auth.bearer import BearerAuth
from fastmcp.client.transports import SSETransport, StdioTransport, StreamableHttpTransport
from mcp.shared.exceptions import MCPError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from schemas.settings import Settings
from services.egress import check_endpoint
from workers.sandbox import Sandbox, give_to, required, sandbox_uid, visible

log = logging.getLogger(__name__)

MAX_POOLED_CLIENTS = 64
CONNECT_ATTEMPTS = 3


class McpUnavailable(Exception):
    """The server could not be reached or did not answer in time (counts against its breaker)."""


class McpTimeout(McpUnavailable):
    pass


class McpUnauthorized(Exception):
    """The server answered 401 to the token: for OAuth grants, worth one refresh and one retry."""


class McpToolError(Exception):
    """The server answered with an error: the call reached it, so the breaker does not count it."""


@dataclass(frozen=True)
class ServerSpec:
    """What a worker needs to reach one MCP server, secrets already opened."""

    config_id: UUID
    version: datetime
    transport: str
    endpoint_url: str | None
    command: str | None
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    # The bearer or OAuth access token; it lives only in this process's memory and the request header.
    token: str | None = None

    # Whose session this is: the user for an OAuth grant (their own token), None when shared.
    caller: UUID | None = None

    @property
    def pool_key(self) -> PoolKey:
        return (self.config_id, self.caller)


PoolKey = tuple[UUID, UUID | None]
ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]


class WatchedBearer(BearerAuth):
    """fastmcp's bearer auth, remembering a 401: fastmcp reports it only as a generic MCP error."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.rejected = False

    def auth_flow(self, request: httpx2.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        response = yield request
        if response.status_code == 401:
            self.rejected = True


def _transport(spec: ServerSpec, sandbox: Sandbox | None) -> Any:
    if spec.transport == "stdio":
        assert spec.command is not None
        argv, env, cwd = [spec.command, *spec.args], dict(spec.env), None
        if sandbox is not None:
            # Its scratch directory is its HOME and only writable path; the working directory stays
            # the worker's when the sandbox shows it (the repo), so relative module paths still work.
            (home,) = sandbox.writable
            cwd = Path.cwd() if visible(Path.cwd()) else home
            argv, env = sandbox.wrap(argv, cwd), {**env, "HOME": str(home), "TMPDIR": "/tmp"}
        # A server's stderr can echo its inputs; it stays out of the platform's logs.
        return StdioTransport(
            argv[0], argv[1:], env=env, cwd=str(cwd) if cwd else None, log_file=Path(os.devnull)
        )
    assert spec.endpoint_url is not None
    auth = WatchedBearer(spec.token) if spec.token else None
    if spec.transport == "sse":
        return SSETransport(spec.endpoint_url, auth=auth)
    return StreamableHttpTransport(spec.endpoint_url, auth=auth)


def _is_connection_failure(exc: BaseException) -> bool:
    return isinstance(exc, (RuntimeError, OSError, ConnectionError)) and not isinstance(exc, McpToolError)


@dataclass
class _Pooled:
    """One upstream MCP session: the credentials it was opened with, and who is using it now."""

    client: Client[Any]
    version: datetime
    token: str | None
    last_used: float
    users: int = 0
    # Replaced (new configuration version or token) or expired while in use: closed by its last user.
    retired: bool = False


class ClientPool:
    """One upstream MCP session per (configuration, caller), kept open between calls.

    Reuse keeps stdio servers running and HTTP sessions initialised, so a call costs one request to
    the server. The caller is the user for OAuth grants (each has their own token) and nobody for the
    rest (the configuration's secret is everyone's). A session is replaced when the configuration's
    version or the token changes (an edit, an OAuth refresh), closed after ``idle_seconds`` unused,
    and the least recently used goes past ``MAX_POOLED_CLIENTS``. Calls share a session
    concurrently (MCP multiplexes requests by id). A client that fails is closed and forgotten, so the
    next call reconnects.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.idle_seconds = settings.mcp_client_idle_seconds
        self._clients: OrderedDict[PoolKey, _Pooled] = OrderedDict()
        # Concurrent first calls for one key open one session, not one each.
        self._connecting: dict[PoolKey, asyncio.Lock] = {}
        self._sandboxes: dict[int, Sandbox] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def open_sessions(self) -> int:
        """How many upstream sessions are open now."""
        return len(self._clients)

    async def _stdio_sandbox(self, spec: ServerSpec) -> Sandbox | None:
        """A stdio server's own sandbox (uid per configuration, scratch HOME, no network at all):
        it runs on a tools worker, next to the platform's secrets, for whoever saved the config."""
        if spec.transport != "stdio" or not required(self.settings):
            return None
        key = f"mcp:{spec.config_id}:{uuid4().hex}"
        scratch = self.settings.private_of(key)
        scratch.mkdir(mode=0o700, parents=True)
        uid = sandbox_uid(str(spec.config_id), "mcp")
        await asyncio.to_thread(give_to, scratch, uid)
        return Sandbox("mcp", uid, self.settings.private_of(f"{key}.etc"), writable=(scratch,))

    def _current(self, spec: ServerSpec) -> _Pooled | None:
        pooled = self._clients.get(spec.pool_key)
        if pooled is None or (pooled.version, pooled.token) == (spec.version, spec.token):
            return pooled
        return None

    @contextlib.asynccontextmanager
    async def _session(self, spec: ServerSpec) -> AsyncIterator[Client[Any]]:
        """The pooled session for ``spec``, connected if need be, held for the duration of a call."""
        try:
            pooled = self._current(spec) or await self._connect_once(spec)
        except MCPError as exc:
            raise McpUnavailable(f"the MCP server refused the connection: {exc}") from exc
        except (RuntimeError, OSError) as exc:
            raise McpUnavailable(f"cannot connect to the MCP server: {exc}") from exc
        if self._clients.get(spec.pool_key) is pooled:
            self._clients.move_to_end(spec.pool_key)
        pooled.users += 1
        try:
            yield pooled.client
        finally:
            pooled.users -= 1
            pooled.last_used = time.monotonic()
            if pooled.retired and pooled.users == 0:
                await self._close(pooled.client)

    async def _connect_once(self, spec: ServerSpec) -> _Pooled:
        lock = self._connecting.setdefault(spec.pool_key, asyncio.Lock())
        async with lock:
            pooled = self._current(spec)
            if pooled is None:
                pooled = await self._connect(spec)
        if not lock.locked():
            self._connecting.pop(spec.pool_key, None)
        return pooled

    async def _connect(self, spec: ServerSpec) -> _Pooled:
        if spec.endpoint_url:
            await check_endpoint(spec.endpoint_url, self.settings)
        timeout = self.settings.mcp_call_timeout_seconds
        client: Client[Any] | None = None
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(CONNECT_ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception(_is_connection_failure),
            reraise=True,
        ):
            with attempt:
                sandbox = await self._stdio_sandbox(spec)
                client = Client(_transport(spec, sandbox), timeout=timeout, init_timeout=min(timeout, 30))
                if sandbox is not None:
                    self._sandboxes[id(client)] = sandbox
                try:
                    await client.__aenter__()
                except Exception as exc:
                    await self._close(client)
                    if _rejected(client):
                        raise McpUnauthorized("the MCP server refused the token (401)") from exc
                    raise
        assert client is not None
        # The session it replaces (an older version or token of the same configuration and caller).
        await self._retire(self._clients.pop(spec.pool_key, None))
        pooled = _Pooled(client, spec.version, spec.token, time.monotonic())
        self._clients[spec.pool_key] = pooled
        while len(self._clients) > MAX_POOLED_CLIENTS:
            _, oldest = self._clients.popitem(last=False)
            await self._retire(oldest)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="mcp-client-sweeper")
        return pooled

    async def _retire(self, pooled: _Pooled | None) -> None:
        if pooled is None:
            return
        pooled.retired = True
        if pooled.users == 0:
            await self._close(pooled.client)

    async def _sweep(self) -> None:
        """Closes sessions idle for ``idle_seconds``, while any are open."""
        while self._clients:
            await asyncio.sleep(self.idle_seconds / 2)
            cutoff = time.monotonic() - self.idle_seconds
            for key, pooled in list(self._clients.items()):
                if pooled.users == 0 and pooled.last_used < cutoff:
                    del self._clients[key]
                    await self._retire(pooled)

    async def _close(self, client: Client[Any]) -> None:
        """Close a client, then remove its stdio server's sandbox and scratch directory."""
        await _close(client)
        sandbox = self._sandboxes.pop(id(client), None)
        if sandbox is not None:
            await sandbox.close()
            for path in sandbox.writable:
                await asyncio.to_thread(shutil.rmtree, path, True)

    async def _discard(self, spec: ServerSpec, client: Client[Any]) -> None:
        """Forget a session that failed (if a concurrent call has not replaced it already)."""
        pooled = self._clients.get(spec.pool_key)
        if pooled is not None and pooled.client is client:
            del self._clients[spec.pool_key]
            await self._retire(pooled)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        while self._clients:
            _, pooled = self._clients.popitem()
            await self._retire(pooled)

    async def list_tools(self, spec: ServerSpec) -> list[dict[str, Any]]:
        async with self._session(spec) as client:
            try:
                async with self._token_watched(spec, client):
                    tools = await client.list_tools()
            except MCPError as exc:
                await self._discard(spec, client)
                raise _classify(exc) from exc
            except (RuntimeError, OSError) as exc:
                await self._discard(spec, client)
                raise McpUnavailable(f"the MCP server stopped answering: {exc}") from exc
        return [
            {"name": tool.name, "description": tool.description or "", "input_schema": tool.input_schema}
            for tool in tools
        ]

    async def call_tool(
        self,
        spec: ServerSpec,
        name: str,
        arguments: dict[str, Any],
        timeout: float,
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        async def progress(progress: float, total: float | None, message: str | None) -> None:
            if on_progress is not None:
                await on_progress(progress, total, message)

        async with self._session(spec) as client:
            try:
                async with self._token_watched(spec, client):
                    result = await client.call_tool(
                        name, arguments, timeout=timeout, progress_handler=progress, raise_on_error=False
                    )
            except MCPError as exc:
                error = _classify(exc)
                if isinstance(error, McpUnavailable):
                    # A timed-out session may be stuck on the server side; start afresh next time.
                    await self._discard(spec, client)
                raise error from exc
            except (RuntimeError, OSError) as exc:
                await self._discard(spec, client)
                raise McpUnavailable(f"the MCP server stopped answering: {exc}") from exc
        content = [block.model_dump(mode="json", exclude_none=True) for block in result.content]
        if result.is_error:
            text = " ".join(block.get("text", "") for block in content if block.get("type") == "text")
            raise McpToolError(text or f"tool {name} failed")
        return {"content": content, "structured_content": result.structured_content}

    @contextlib.asynccontextmanager
    async def _token_watched(self, spec: ServerSpec, client: Client[Any]) -> AsyncIterator[None]:
        """A failure after a 401 is the token's fault, not the server's (an access token can
        expire while its pooled session lives)."""
        try:
            yield
        except (MCPError, RuntimeError, OSError) as exc:
            if not _rejected(client):
                raise
            await self._discard(spec, client)
            raise McpUnauthorized("the MCP server refused the token (401)") from exc


def _rejected(client: Client[Any]) -> bool:
    auth = getattr(client.transport, "auth", None)
    return isinstance(auth, WatchedBearer) and auth.rejected


def _classify(exc: MCPError) -> Exception:
    text = str(exc)
    if "timed out" in text.lower():
        return McpTimeout("the MCP server did not answer in time")
    return McpToolError(text)


async def _close(client: Client[Any]) -> None:
    with contextlib.suppress(Exception):
        await client.__aexit__(None, None, None)
