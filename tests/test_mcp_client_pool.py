"""The tools worker's upstream MCP clients (``workers/mcp_client.ClientPool``) against a real
fastmcp server over Streamable HTTP: kept per (configuration, caller) and shared by concurrent
calls, replaced when the configuration's version or the token changes, closed when idle. And
against npm's server-everything over Streamable HTTP, which speaks the session-based protocol
(``initialize``, ``mcp-session-id``) and answers in SSE.

MCP 2026-07-28 keeps no session on the server, so what is kept is the client: its negotiated
connection and its HTTP connections. The server's ``connection`` tool answers the TCP address a call
came from, so what is reused or replaced is what the server saw, not what the pool says."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from schemas.settings import Settings
from tests.fixtures.mcp import mcp_server
from tests.fixtures.stack import REPO, free_port, stop, wait_answering
from workers.mcp_client import ClientPool, McpToolError, McpUnauthorized, McpUnavailable, ServerSpec

pytestmark = pytest.mark.timeout(120)

FIRST, REFRESHED, WITHDRAWN = (secrets.token_urlsafe(16) for _ in range(3))
NOW = datetime(2026, 12, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with mcp_server("http", f"--token={FIRST}", f"--token={REFRESHED}") as url:
        yield url


@pytest.fixture(scope="module")
def everything_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(REPO / "node_modules" / ".bin" / "mcp-server-everything"), "streamableHttp"],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_answering(url, timeout=60, process=proc)
        yield url
    finally:
        stop(proc)


def settings(**overrides: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, environment="test", jwt_secret="x" * 32, mcp_allow_insecure_http=True, **overrides
    )


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    pool = ClientPool(settings())
    yield pool
    await pool.close()


def spec(
    url: str,
    *,
    config_id: uuid.UUID,
    version: datetime,
    token: str | None,
    caller: uuid.UUID | None = None,
) -> ServerSpec:
    return ServerSpec(
        config_id=config_id,
        caller=caller,
        version=version,
        transport="http",
        endpoint_url=url,
        command=None,
        args=(),
        env=(),
        token=token,
    )


async def peer(pool: ClientPool, server: ServerSpec) -> str:
    result = await pool.call_tool(server, "connection", {}, timeout=20)
    return str(result["content"][0]["text"])


async def test_one_client_serves_sequential_and_concurrent_calls(pool: ClientPool, server_url: str) -> None:
    server = spec(server_url, config_id=uuid.uuid4(), version=NOW, token=FIRST)
    first = await peer(pool, server)
    assert await peer(pool, server) == first
    # Concurrent calls of another configuration share one client of its own, whose HTTP
    # connections then carry the later calls.
    other = spec(server_url, config_id=uuid.uuid4(), version=NOW, token=FIRST)
    together = set(await asyncio.gather(*(peer(pool, other) for _ in range(8))))
    assert pool.open_sessions() == 2
    assert first not in together
    assert await peer(pool, other) in together
    assert await peer(pool, server) == first


async def test_a_new_version_or_token_replaces_the_client(pool: ClientPool, server_url: str) -> None:
    config_id = uuid.uuid4()
    original = spec(server_url, config_id=config_id, version=NOW, token=FIRST)
    before = await peer(pool, original)
    edited = spec(server_url, config_id=config_id, version=NOW + timedelta(seconds=1), token=FIRST)
    after_edit = await peer(pool, edited)
    assert after_edit != before
    assert await peer(pool, edited) == after_edit
    # An OAuth refresh: the same configuration and caller with a new access token.
    refreshed = spec(server_url, config_id=config_id, version=edited.version, token=REFRESHED)
    after_refresh = await peer(pool, refreshed)
    assert after_refresh not in (before, after_edit)
    assert pool.open_sessions() == 1
    # A token the server refuses is reported as the token's fault and replaces nothing.
    withdrawn = spec(server_url, config_id=config_id, version=edited.version, token=WITHDRAWN)
    with pytest.raises(McpUnauthorized):
        await peer(pool, withdrawn)
    assert await peer(pool, refreshed) == after_refresh
    assert pool.open_sessions() == 1


async def test_callers_of_an_oauth_configuration_get_clients_of_their_own(
    pool: ClientPool, server_url: str
) -> None:
    config_id = uuid.uuid4()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    of_alice = spec(server_url, config_id=config_id, version=NOW, token=FIRST, caller=alice)
    of_bob = spec(server_url, config_id=config_id, version=NOW, token=REFRESHED, caller=bob)
    alice_peer, bob_peer = await peer(pool, of_alice), await peer(pool, of_bob)
    assert alice_peer != bob_peer
    # Bob's client did not replace Alice's.
    assert await peer(pool, of_alice) == alice_peer
    assert await peer(pool, of_bob) == bob_peer


async def test_an_idle_client_is_closed_and_the_next_call_opens_another(server_url: str) -> None:
    pool = ClientPool(settings(mcp_client_idle_seconds=0.3))
    try:
        server = spec(server_url, config_id=uuid.uuid4(), version=NOW, token=FIRST)
        before = await peer(pool, server)
        async with asyncio.timeout(20):
            while pool.open_sessions():
                await asyncio.sleep(0.05)
        assert await peer(pool, server) != before
    finally:
        await pool.close()


async def test_a_session_protocol_server_answering_in_sse(pool: ClientPool, everything_url: str) -> None:
    server = spec(everything_url, config_id=uuid.uuid4(), version=NOW, token=None)
    names = {tool["name"] for tool in await pool.list_tools(server)}
    assert {"echo", "trigger-long-running-operation"} <= names
    echoed = await pool.call_tool(server, "echo", {"message": "hello"}, timeout=20)
    assert echoed["content"] == [{"type": "text", "text": "Echo: hello"}]
    reported: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        reported.append((done, total))

    together = await asyncio.gather(
        pool.call_tool(
            server, "trigger-long-running-operation", {"duration": 1, "steps": 2}, 20, on_progress
        ),
        *(pool.call_tool(server, "echo", {"message": str(n)}, timeout=20) for n in range(4)),
    )
    assert "completed" in together[0]["content"][0]["text"]
    assert reported == [(1, 2), (2, 2)]
    assert [result["content"][0]["text"] for result in together[1:]] == [f"Echo: {n}" for n in range(4)]
    with pytest.raises(McpToolError, match="nope"):
        await pool.call_tool(server, "nope", {}, timeout=20)
    assert pool.open_sessions() == 1


@pytest.fixture
def redirecting(server_url: str) -> Iterator[str]:
    """An endpoint that sends every request on to the test server (307)."""

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("Location", server_url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_DELETE = do_POST

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/mcp"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_a_redirect_is_not_followed(pool: ClientPool, redirecting: str) -> None:
    # The egress check vetted the configured URL only: neither client follows the server elsewhere.
    server = spec(redirecting, config_id=uuid.uuid4(), version=NOW, token=FIRST)
    with pytest.raises(McpUnavailable, match="not followed"):
        await pool.call_tool(server, "echo", {"text": "b"}, timeout=20)
    assert pool.open_sessions() == 0


@pytest.fixture(params=[401, 404])
def refusing_sse(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """An SSE endpoint that answers its event stream's GET with ``request.param``."""
    status = int(request.param)

    class Refuse(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/sse", status
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_an_sse_endpoint_refusing_the_connection_is_unavailable(
    pool: ClientPool, refusing_sse: tuple[str, int]
) -> None:
    # Unavailable (the breaker counts it), not httpx's own error reported as the tool's.
    url, status = refusing_sse
    server = replace(spec(url, config_id=uuid.uuid4(), version=NOW, token=None), transport="sse")
    for _ in range(2):
        with pytest.raises(McpUnavailable, match=rf"answered {status} .* \(GET /sse\)"):
            await pool.call_tool(server, "echo", {"text": "a"}, timeout=20)
    assert pool.open_sessions() == 0


async def test_a_call_refused_for_its_headers_lists_the_tools_again_and_is_retried_once(
    pool: ClientPool,
) -> None:
    """A stateless server whose ``echo`` comes to route ``text`` as an ``Mcp-Param-Text`` header
    after the client listed it refuses the client's next call (HEADER_MISMATCH: the header is
    missing). The client lists the tools again and sends the call once more, with the header, on
    the same session and connection."""
    with mcp_server("http", f"--token={FIRST}") as url:
        server = spec(url, config_id=uuid.uuid4(), version=NOW, token=FIRST)
        plain = await pool.call_tool(server, "echo", {"text": "plain"}, timeout=20)
        assert plain["content"][0]["text"] == "echo: plain"
        before = await peer(pool, server)
        await pool.call_tool(server, "route_echo", {}, timeout=20)
        routed = await pool.call_tool(server, "echo", {"text": "routed"}, timeout=20)
        assert routed["content"][0]["text"] == "echo: routed"
        assert await peer(pool, server) == before
        assert pool.open_sessions() == 1
