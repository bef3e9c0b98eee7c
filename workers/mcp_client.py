"""Talking to a tenant's MCP server from a tools worker: one client per configuration, reused
across calls, with a call timeout, retries for connection failures, and the egress check repeated
right before connecting. Streamable HTTP servers get plain JSON-RPC POSTs (``HttpSession``); stdio,
SSE and servers that answer something unexpected get fastmcp's ``Client``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import httpx2
from fastmcp import Client
from fastmcp.client.auth.bearer import BearerAuth
from fastmcp.client.logging import LogMessage
from fastmcp.client.transports import SSETransport, StreamableHttpTransport
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import find_invalid_x_mcp_header, mcp_param_headers, x_mcp_header_map
from mcp_types.jsonrpc import HEADER_MISMATCH
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from schemas.settings import Settings
from services.egress import IPAddress, Resolver, check_endpoint, resolve
from services.lean_http import Pool, Reply, Response
from workers.mcp_http import FastmcpHttp, ReplyTooLarge, bounded
from workers.mcp_stdio import BoundedStdio
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


def _transport(spec: ServerSpec, sandbox: Sandbox | None, http: FastmcpHttp | None, limit: int) -> Any:
    if spec.transport == "stdio":
        assert spec.command is not None
        argv, env, cwd = [spec.command, *spec.args], dict(spec.env), None
        if sandbox is not None:
            # Its scratch directory is its HOME and only writable path; the working directory stays
            # the worker's when the sandbox shows it (the repo), so relative module paths still work.
            (home,) = sandbox.writable
            cwd = Path.cwd() if visible(Path.cwd()) else home
            argv, env = sandbox.wrap(argv, cwd), {**env, "HOME": str(home), "TMPDIR": "/tmp"}
        return BoundedStdio(argv, env, cwd, limit)
    assert spec.endpoint_url is not None and http is not None
    auth = WatchedBearer(spec.token) if spec.token else None
    if spec.transport == "sse":
        # Its replies come on its event stream, bounded per request by the factory (FastmcpHttp).
        return SSETransport(spec.endpoint_url, auth=auth, httpx_client_factory=http)
    return StreamableHttpTransport(
        spec.endpoint_url, auth=auth, httpx_client_factory=http, max_sse_event_size=http.limit
    )


# The stateless protocol (a ``server/discover`` probe, no session) and, for servers that do not
# speak it, the session-based one fastmcp also offers (``initialize``, an ``mcp-session-id``).
STATELESS_PROTOCOL = "2026-07-28"
SESSION_PROTOCOL = "2025-11-25"
SESSION_PROTOCOLS = frozenset({SESSION_PROTOCOL, "2025-06-18", "2025-03-26"})
CLIENT_INFO = {"name": "agentapi", "version": "1"}
STATELESS_META = {
    "io.modelcontextprotocol/protocolVersion": STATELESS_PROTOCOL,
    "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
    "io.modelcontextprotocol/clientCapabilities": {},
}
METHOD_NOT_FOUND = -32601


class Unusual(Exception):
    """The server answered the light client's handshake with something it does not handle (a
    redirect, another protocol version): fastmcp's client talks to it instead (and refuses a
    redirect with its own message)."""


class HeadersRefused(McpToolError):
    """The server refused a call's ``Mcp-Param-*`` headers: they disagree with its tool's schema."""


class HttpSession:
    """One Streamable HTTP MCP server spoken to with JSON-RPC POSTs over kept-alive connections
    (``services.lean_http``). A tool call through fastmcp's client (its transport's tasks and
    memory streams, pydantic models for every message, a ``tools/list`` to check results against
    output schemas) cost the worker twice the CPU of the request itself, and httpx's request and
    response models another 40 % over httpcore's, which was itself a third of the worker's loop.

    The handshake runs once per pooled session: ``server/discover`` for the stateless protocol,
    else ``initialize`` then ``notifications/initialized``, keeping the session id and negotiated
    version for the headers of later requests. A reply is JSON or an SSE stream, whose progress
    notifications go to the caller's callback and whose requests from the server (this client
    declares no capabilities) are answered "method not found". Redirects are not followed (the
    egress check vetted this URL only), connections go to the addresses it vetted, and a reply longer
    than ``max_reply_bytes`` is cut short (McpUnavailable). Results are passed on as the server
    wrote them: structured content is not checked against the tool's output schema.

    A stateless-protocol server may route by ``Mcp-Param-*`` headers that mirror arguments its
    tools' schemas mark with ``x-mcp-header``, and refuses a call whose headers and body disagree:
    the session lists the tools once before its first call to learn which, as the SDK's client
    does, and again when the server refuses a call's headers (its tools changed)."""

    def __init__(self, url: str, token: str | None, addresses: list[IPAddress], max_reply_bytes: int) -> None:
        self.max_reply_bytes = max_reply_bytes
        self._base = [
            (b"accept", b"application/json, text/event-stream"),
            (b"content-type", b"application/json"),
        ]
        if token:
            self._base.append((b"authorization", f"Bearer {token}".encode()))
        self.http = Pool(url, [str(address) for address in addresses], httpx.create_ssl_context())
        self.protocol = STATELESS_PROTOCOL
        self.session_id: str | None = None
        self._ids = itertools.count(1)
        # Per tool, the argument paths a stateless server wants mirrored as headers; None: not listed.
        self._param_headers: dict[str, dict[tuple[str, ...], str]] | None = None

    async def open(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._handshake()
        except HTTP_FAILURES as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise ConnectionError("the MCP server did not answer the handshake in time") from exc
        except ReplyTooLarge as exc:
            raise McpUnavailable(str(exc)) from exc

    async def _handshake(self) -> None:
        discovered = await self._post(
            _request(0, "server/discover", {"_meta": STATELESS_META}), "server/discover"
        )
        reply = _json_reply(discovered, 0) if discovered.status == 200 else None
        if reply is not None and STATELESS_PROTOCOL in reply.get("result", {}).get("supportedVersions", ()):
            return
        params = {"protocolVersion": SESSION_PROTOCOL, "capabilities": {}, "clientInfo": CLIENT_INFO}
        initialized = await self._post(_request(0, "initialize", params), bare=True)
        reply = _json_reply(initialized, 0) if initialized.status == 200 else None
        version = (reply or {}).get("result", {}).get("protocolVersion")
        if version not in SESSION_PROTOCOLS:
            raise Unusual(f"initialize answered {initialized.status}, protocol {version!r}")
        self.protocol = version
        self.session_id = _header(initialized, b"mcp-session-id")
        notified = await self._post(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        if notified.status >= 400:
            raise Unusual(f"notifications/initialized answered {notified.status}")

    async def _post(self, body: str, method: str | None = None, *, bare: bool = False) -> Reply:
        """One request and its whole answer (the handshake's); ``bare``: before any protocol."""
        response = await self._exchange("POST", self._headers(method, bare=bare), body.encode())
        _refused(response.status)
        return response

    async def _exchange(self, method: str, headers: list[tuple[bytes, bytes]], content: bytes) -> Reply:
        async with self.http.stream(method, headers, content) as response:
            return await self._read(response)

    async def _read(self, response: Response) -> Reply:
        """The response with its body, read up to the byte limit (ReplyTooLarge past it: leaving
        the body unread closes its connection)."""
        body = [chunk async for chunk in bounded(response.aiter_stream(), self.max_reply_bytes)]
        return Reply(response.status, response.headers, b"".join(body))

    def _headers(
        self, method: str | None = None, name: str | None = None, *, bare: bool = False
    ) -> list[tuple[bytes, bytes]]:
        if bare:
            return self._base
        headers = [*self._base, (b"mcp-protocol-version", self.protocol.encode())]
        if self.session_id is not None:
            headers.append((b"mcp-session-id", self.session_id.encode()))
        if self.protocol == STATELESS_PROTOCOL and method is not None:
            headers.append((b"mcp-method", method.encode()))
            if name is not None:
                headers.append((b"mcp-name", name.encode()))
        return headers

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        timeout: float,
        on_progress: ProgressCallback | None = None,
        name: str | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> dict[str, Any]:
        """The result of one request; raises the pool's exceptions for what went wrong."""
        request_id = next(self._ids)
        meta: dict[str, Any] = dict(STATELESS_META) if self.protocol == STATELESS_PROTOCOL else {}
        if on_progress is not None:
            meta["progressToken"] = request_id
        body = _request(request_id, method, {**params, "_meta": meta} if meta else params).encode()
        try:
            async with asyncio.timeout(timeout):
                headers = self._headers(method, name) + (extra_headers or [])
                async with self.http.stream("POST", headers, body) as response:
                    _refused(response.status)
                    reply = await self._reply(response, request_id, on_progress)
        except TimeoutError as exc:
            raise McpTimeout("the MCP server did not answer in time") from exc
        except HTTP_FAILURES as exc:
            raise McpUnavailable(f"the MCP server stopped answering: {type(exc).__name__}: {exc}") from exc
        except (Unusual, ValueError) as exc:
            raise McpUnavailable(f"the MCP server's answer is unreadable: {exc}") from exc
        except ReplyTooLarge as exc:
            raise McpUnavailable(str(exc)) from exc
        if reply is None:
            raise McpUnavailable(f"the MCP server answered {response.status} without a reply")
        if "error" in reply:
            text = str(reply["error"].get("message") or reply["error"])
            if reply["error"].get("code") == HEADER_MISMATCH:
                raise HeadersRefused(text)
            raise McpTimeout(text) if "timed out" in text.lower() else McpToolError(text)
        result: dict[str, Any] = reply.get("result") or {}
        if result.get("resultType", "complete") != "complete":
            kind = result.get("resultType")
            raise McpToolError(f"the server asked for input ({kind}), which a gateway call cannot give")
        return result

    async def _reply(
        self, response: Response, request_id: int, on_progress: ProgressCallback | None
    ) -> dict[str, Any] | None:
        """The JSON-RPC reply to ``request_id`` in a response, JSON or SSE; None if it has none."""
        kind = _header(response, b"content-type") or ""
        if not kind.startswith("text/event-stream"):
            whole = await self._read(response)
            return _json_reply(whole, request_id) if kind.startswith("application/json") else None
        async for data in _sse_data(bounded(response.aiter_stream(), self.max_reply_bytes)):
            message = json.loads(data)
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return message
            method = message.get("method")
            if method == "notifications/progress" and on_progress is not None:
                progress = message.get("params") or {}
                if progress.get("progressToken") == request_id:
                    await on_progress(
                        progress.get("progress", 0), progress.get("total"), progress.get("message")
                    )
            elif method is not None and "id" in message:
                await self._answer_server(message)
        return None

    async def _answer_server(self, message: dict[str, Any]) -> None:
        """A request from the server in a reply's stream: this client offers no such capability."""
        error = {"code": METHOD_NOT_FOUND, "message": f"{message.get('method')} is not supported"}
        with contextlib.suppress(ReplyTooLarge, *HTTP_FAILURES):
            await self._exchange(
                "POST",
                self._headers(),
                json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": error}).encode(),
            )

    async def call_tool(
        self, name: str, arguments: dict[str, Any], timeout: float, on_progress: ProgressCallback | None
    ) -> dict[str, Any]:
        stateless = self.protocol == STATELESS_PROTOCOL
        if stateless and self._param_headers is None:
            await self.list_tools(timeout)
        try:
            result = await self._call(name, arguments, timeout, on_progress)
        except HeadersRefused:
            if not stateless:
                raise
            await self.list_tools(timeout)
            result = await self._call(name, arguments, timeout, on_progress)
        content: list[dict[str, Any]] = result.get("content") or []
        if result.get("isError"):
            text = " ".join(str(block.get("text", "")) for block in content if block.get("type") == "text")
            raise McpToolError(text or f"tool {name} failed")
        return {"content": content, "structured_content": result.get("structuredContent")}

    async def _call(
        self, name: str, arguments: dict[str, Any], timeout: float, on_progress: ProgressCallback | None
    ) -> dict[str, Any]:
        params = {"name": name, "arguments": arguments}
        return await self.request(
            "tools/call", params, timeout, on_progress, name, self._mirrored(name, arguments)
        )

    async def list_tools(self, timeout: float) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            result = await self.request("tools/list", {"cursor": cursor} if cursor else {}, timeout)
            tools += result.get("tools") or []
            cursor = result.get("nextCursor")
            if not cursor:
                break
        self._param_headers = {
            str(tool.get("name")): x_mcp_header_map(schema)
            for tool in tools
            if (schema := tool.get("inputSchema")) and find_invalid_x_mcp_header(schema) is None
        }
        return tools

    def _mirrored(self, name: str, arguments: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        paths = (self._param_headers or {}).get(name)
        if not paths:
            return []
        mirrored = mcp_param_headers(paths, arguments)
        return [(key.lower().encode(), value.encode()) for key, value in mirrored.items()]

    async def close(self) -> None:
        """Ends the server's session (session protocol), then closes the connections."""
        if self.session_id is not None:
            with contextlib.suppress(TimeoutError, ReplyTooLarge, *HTTP_FAILURES):
                async with asyncio.timeout(5):
                    await self._exchange("DELETE", self._headers(), b"")
        await self.http.aclose()


# services.lean_http's failures, the connection's and the TLS handshake's.
HTTP_FAILURES: tuple[type[Exception], ...] = (OSError,)


def _request(request_id: int, method: str, params: dict[str, Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def _header(response: Response | Reply, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _refused(status: int) -> None:
    if status == 401:
        raise McpUnauthorized("the MCP server refused the token (401)")
    if 300 <= status < 400:
        raise Unusual(f"the MCP server redirects ({status})")


def _json_reply(response: Reply, request_id: int) -> dict[str, Any] | None:
    """The reply to ``request_id`` in a response read whole, JSON or SSE."""
    if (_header(response, b"content-type") or "").startswith("text/event-stream"):
        messages = [json.loads(data) for data in _split_events(response.content + b"\n\n")[0]]
    else:
        messages = [json.loads(response.content)] if response.content else []
    return next((m for m in messages if isinstance(m, dict) and m.get("id") == request_id), None)


async def _sse_data(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The data of each event of an SSE body, as it arrives."""
    rest = b""
    async for chunk in body:
        rest += chunk
        # A CR at the end may be the first half of a CRLF.
        if not rest.endswith(b"\r"):
            events, rest = _split_events(rest)
            for data in events:
                yield data


def _split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The data of the complete events in ``buffer`` (those without data left out), and the rest."""
    *events, rest = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n\n")
    found = []
    for event in events:
        lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if any(line.strip() for line in lines):
            found.append(b"\n".join(lines))
    return found, rest


def _is_connection_failure(exc: BaseException) -> bool:
    return isinstance(exc, (RuntimeError, OSError, ConnectionError)) and not isinstance(exc, McpToolError)


@dataclass
class _Pooled:
    """One upstream MCP session: the credentials it was opened with, and who is using it now."""

    client: Client[Any] | HttpSession
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

    ``resolver`` is the egress check's (the system's unless a test brings its own name service); an
    HTTP session connects to the addresses it answered, never to a later lookup of the name.
    """

    def __init__(self, settings: Settings, resolver: Resolver = resolve) -> None:
        self.settings = settings
        self.resolver = resolver
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
    async def _session(self, spec: ServerSpec) -> AsyncIterator[Client[Any] | HttpSession]:
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
        addresses = []
        if spec.endpoint_url:
            addresses = await check_endpoint(spec.endpoint_url, self.settings, resolver=self.resolver)
        client: Client[Any] | HttpSession | None = None
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(CONNECT_ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=2),
            retry=retry_if_exception(_is_connection_failure),
            reraise=True,
        ):
            with attempt:
                client = await self._open(spec, addresses)
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

    async def _open(self, spec: ServerSpec, addresses: list[IPAddress]) -> Client[Any] | HttpSession:
        """A connected client: the light one for Streamable HTTP unless the server's handshake is
        one it does not handle, fastmcp's otherwise."""
        timeout = self.settings.mcp_call_timeout_seconds
        limit = self.settings.mcp_max_reply_bytes
        if spec.transport == "http":
            assert spec.endpoint_url is not None
            session = HttpSession(spec.endpoint_url, spec.token, addresses, limit)
            try:
                await session.open(min(timeout, 30))
                return session
            except Unusual as exc:
                log.info("MCP configuration %s: through fastmcp's client (%s)", spec.config_id, exc)
                await session.close()
            except BaseException:
                await session.close()
                raise
        sandbox = await self._stdio_sandbox(spec)
        http = FastmcpHttp(addresses, limit) if spec.endpoint_url else None
        client: Client[Any] = Client(
            _transport(spec, sandbox, http, limit),
            timeout=timeout,
            init_timeout=min(timeout, 30),
            log_handler=_ignore_server_log,
        )
        if sandbox is not None:
            self._sandboxes[id(client)] = sandbox
        try:
            await client.__aenter__()
        except Exception as exc:
            await self._close(client)
            if _rejected(client):
                raise McpUnauthorized("the MCP server refused the token (401)") from exc
            if oversized := _oversized(client):
                raise McpUnavailable(oversized) from exc
            if isinstance(exc, httpx2.HTTPStatusError):
                # fastmcp passes an SSE endpoint's refusal on as httpx's own error: it is the
                # server's answer, not a fault of the call, so its breaker counts it.
                raise McpUnavailable(_refusal(exc.response)) from exc
            raise
        return client

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

    async def _close(self, client: Client[Any] | HttpSession) -> None:
        """Close a client, then remove its stdio server's sandbox and scratch directory."""
        if isinstance(client, HttpSession):
            await client.close()
            return
        await _close(client)
        sandbox = self._sandboxes.pop(id(client), None)
        if sandbox is not None:
            await sandbox.close()
            for path in sandbox.writable:
                await asyncio.to_thread(shutil.rmtree, path, True)

    async def _discard(self, spec: ServerSpec, client: Client[Any] | HttpSession) -> None:
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
            if isinstance(client, HttpSession):
                listed = await self._light(
                    spec, client, client.list_tools(self.settings.mcp_call_timeout_seconds)
                )
                return [
                    {
                        "name": tool["name"],
                        "description": tool.get("description") or "",
                        "input_schema": tool.get("inputSchema"),
                    }
                    for tool in listed
                ]
            try:
                async with self._watched(spec, client):
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
            if isinstance(client, HttpSession):
                return await self._light(
                    spec, client, client.call_tool(name, arguments, timeout, on_progress)
                )
            try:
                async with self._watched(spec, client):
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

    async def _light(self, spec: ServerSpec, client: HttpSession, work: Awaitable[Any]) -> Any:
        """``work`` on the light client; after a timeout, a failure or a refused token, the next
        call starts afresh (a timed-out exchange may leave the server's side stuck)."""
        try:
            return await work
        except (McpUnavailable, McpUnauthorized):
            await self._discard(spec, client)
            raise

    @contextlib.asynccontextmanager
    async def _watched(self, spec: ServerSpec, client: Client[Any]) -> AsyncIterator[None]:
        """A failure after a 401 is the token's fault, not the server's (an access token can
        expire while its pooled session lives); one after a reply past the byte limit is the
        server's (fastmcp reports either as a generic error)."""
        try:
            yield
        except (MCPError, RuntimeError, OSError) as exc:
            if _rejected(client):
                await self._discard(spec, client)
                raise McpUnauthorized("the MCP server refused the token (401)") from exc
            if oversized := _oversized(client):
                await self._discard(spec, client)
                raise McpUnavailable(oversized) from exc
            raise


async def _ignore_server_log(message: LogMessage) -> None:
    """A server's log notifications stay out of the platform's logs, as its stderr does: it writes
    what it likes there, as often as it likes (fastmcp's default handler logs each one)."""


def _rejected(client: Client[Any]) -> bool:
    auth = getattr(client.transport, "auth", None)
    return isinstance(auth, WatchedBearer) and auth.rejected


def _oversized(client: Client[Any]) -> str | None:
    if isinstance(client.transport, BoundedStdio):
        return client.transport.oversized
    http = getattr(client.transport, "httpx_client_factory", None)
    return http.oversized if isinstance(http, FastmcpHttp) else None


def _refusal(response: httpx2.Response) -> str:
    status = f"{response.status_code} {response.reason_phrase}".strip()
    hint = {
        401: ": it wants credentials the configuration does not give",
        403: ": it refuses this client",
        404: ": check the configuration's endpoint URL",
    }.get(response.status_code, "")
    return f"the MCP server answered {status} to the connection ({response.request.method} {response.request.url.path}){hint}"


def _classify(exc: MCPError) -> Exception:
    text = str(exc)
    if "timed out" in text.lower():
        return McpTimeout("the MCP server did not answer in time")
    return McpToolError(text)


async def _close(client: Client[Any]) -> None:
    with contextlib.suppress(Exception):
        await client.__aexit__(None, None, None)
