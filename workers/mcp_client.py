"""Talking to a tenant's MCP server from a tools worker: one fastmcp Client per configuration,
reused across calls, with a call timeout, retries for connection failures, and the egress check
repeated right before connecting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
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

    @property
    def pool_key(self) -> tuple[UUID, datetime, str | None]:
        return (self.config_id, self.version, self.token)


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


class ClientPool:
    """Connected clients by configuration version, least recently used evicted.

    Reuse keeps stdio servers running between calls and HTTP sessions initialised. A client that
    fails is closed and forgotten, so the next call reconnects.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: OrderedDict[tuple[UUID, datetime, str | None], Client[Any]] = OrderedDict()
        self._sandboxes: dict[int, Sandbox] = {}

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

    async def _connect(self, spec: ServerSpec) -> Client[Any]:
        client = self._clients.get(spec.pool_key)
        if client is not None:
            self._clients.move_to_end(spec.pool_key)
            return client
        if spec.endpoint_url:
            await check_endpoint(spec.endpoint_url, self.settings)
        timeout = self.settings.mcp_call_timeout_seconds
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
        self._clients[spec.pool_key] = client
        while len(self._clients) > MAX_POOLED_CLIENTS:
            _, oldest = self._clients.popitem(last=False)
            await self._close(oldest)
        return client

    async def _close(self, client: Client[Any]) -> None:
        """Close a client, then remove its stdio server's sandbox and scratch directory."""
        await _close(client)
        sandbox = self._sandboxes.pop(id(client), None)
        if sandbox is not None:
            await sandbox.close()
            for path in sandbox.writable:
                await asyncio.to_thread(shutil.rmtree, path, True)

    async def discard(self, spec: ServerSpec) -> None:
        client = self._clients.pop(spec.pool_key, None)
        if client is not None:
            await self._close(client)

    async def close(self) -> None:
        while self._clients:
            _, client = self._clients.popitem()
            await self._close(client)

    async def list_tools(self, spec: ServerSpec) -> list[dict[str, Any]]:
        client = await self._guarded_connect(spec)
        try:
            async with self._token_watched(spec, client):
                tools = await client.list_tools()
        except MCPError as exc:
            await self.discard(spec)
            raise _classify(exc) from exc
        except (RuntimeError, OSError) as exc:
            await self.discard(spec)
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
        client = await self._guarded_connect(spec)

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            if on_progress is not None:
                await on_progress(progress, total, message)

        try:
            async with self._token_watched(spec, client):
                result = await client.call_tool(
                    name, arguments, timeout=timeout, progress_handler=progress, raise_on_error=False
                )
        except MCPError as exc:
            error = _classify(exc)
            if isinstance(error, McpUnavailable):
                # A timed-out session may be stuck on the server side; start afresh next time.
                await self.discard(spec)
            raise error from exc
        except (RuntimeError, OSError) as exc:
            await self.discard(spec)
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
            await self.discard(spec)
            raise McpUnauthorized("the MCP server refused the token (401)") from exc

    async def _guarded_connect(self, spec: ServerSpec) -> Client[Any]:
        try:
            return await self._connect(spec)
        except MCPError as exc:
            raise McpUnavailable(f"the MCP server refused the connection: {exc}") from exc
        except (RuntimeError, OSError) as exc:
            raise McpUnavailable(f"cannot connect to the MCP server: {exc}") from exc


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
