"""Finding 21: an MCP server over the SSE transport answers on an event stream open for the whole
session, which the tools worker bounded only per event (the MCP SDK's 1 MiB): a hostile server
answering a call with an endless stream of small events (progress notifications, each one a
progress event in the session's log; log notifications, each one a line in the worker's log)
kept the worker busy until the call's timeout, however much it sent. The stream may now carry
AGENTAPI_MCP_MAX_REPLY_BYTES after each of the client's requests, as a Streamable HTTP reply
may: past it the call ends as unavailable, the stream is closed, and the next call starts a new
session. A server's log notifications stay out of the worker's log. A real server on 127.0.0.1."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.security.helpers import hung_up, limited_pool, url_spec
from tests.security.hostile_sse_mcp import HostileSseServer, hostile_sse_server
from workers.mcp_client import ClientPool, McpTimeout, McpUnavailable, ServerSpec

pytestmark = pytest.mark.timeout(120)

LIMIT = 256 * 1024


@pytest.fixture
def server() -> Iterator[HostileSseServer]:
    with hostile_sse_server() as hostile:
        yield hostile


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    async with limited_pool(LIMIT) as pool:
        yield pool


async def hello(pool: ClientPool, spec: ServerSpec) -> str:
    result = await pool.call_tool(spec, "hello", {}, timeout=20)
    return str(result["content"][0]["text"])


@pytest.mark.parametrize("tool", ["endless_progress", "endless_noise"])
async def test_an_endless_stream_of_small_events_ends_the_call_at_the_byte_limit(
    pool: ClientPool, server: HostileSseServer, tool: str, caplog: pytest.LogCaptureFixture
) -> None:
    spec = url_spec("sse", server.url)
    assert await hello(pool, spec) == "hello from hostile-sse"
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    with (
        caplog.at_level(logging.INFO),
        pytest.raises(McpUnavailable, match=f"larger than {LIMIT} bytes") as failed,
    ):
        await pool.call_tool(spec, tool, {}, timeout=90, on_progress=on_progress)
    assert not isinstance(failed.value, McpTimeout)
    # No more progress than the allowance's worth of events (each is over 90 bytes).
    assert len(progress) < LIMIT // 90
    assert not re.search(r"noise \d", caplog.text)
    # The worker hung up on that stream, dropped the session, and serves the next call afresh.
    assert await hung_up(server.hung_up)
    assert pool.open_sessions() == 0
    assert await hello(pool, spec) == "hello from hostile-sse"
