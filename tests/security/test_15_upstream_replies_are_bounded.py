"""Finding 15: the tools worker read an upstream MCP server's reply whole (a JSON body, an SSE event
up to its blank line) with no byte limit, so a tenant's hostile server could grow the worker's
memory without bound. A reply past AGENTAPI_MCP_MAX_REPLY_BYTES now ends the call as unavailable
and closes that connection; one that drips ends at the call's timeout. Real servers on 127.0.0.1,
through the light client (stateless protocol) and fastmcp's (which the light client hands a
server it does not handle)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.security.helpers import hung_up, limited_pool, url_spec
from tests.security.hostile_http_mcp import HostileServer, hostile_server
from workers.mcp_client import ClientPool, HttpSession, McpTimeout, McpUnavailable, ServerSpec

pytestmark = pytest.mark.timeout(120)

LIMIT = 256 * 1024


@pytest.fixture(params=[True, False], ids=["light-client", "fastmcp-client"])
def server(request: pytest.FixtureRequest) -> Iterator[HostileServer]:
    with hostile_server(modern=request.param) as hostile:
        yield hostile


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    async with limited_pool(LIMIT) as pool:
        yield pool


def spec_of(server: HostileServer) -> ServerSpec:
    return url_spec("http", f"http://127.0.0.1:{server.port}/mcp")


async def hello(pool: ClientPool, spec: ServerSpec) -> str:
    result = await pool.call_tool(spec, "hello", {}, timeout=20)
    return str(result["content"][0]["text"])


@pytest.mark.parametrize("tool", ["endless_event", "endless_progress", "huge_json"])
async def test_an_endless_reply_ends_the_call_at_the_byte_limit(
    pool: ClientPool, server: HostileServer, tool: str
) -> None:
    spec = spec_of(server)
    assert await hello(pool, spec) == "hello from hostile"
    light = isinstance(pool._clients[spec.pool_key].client, HttpSession)
    assert light is server.modern
    with pytest.raises(McpUnavailable, match=f"larger than {LIMIT} bytes") as failed:
        await pool.call_tool(spec, tool, {}, timeout=60)
    assert not isinstance(failed.value, McpTimeout)
    # The worker hung up on that reply, dropped the session, and serves the next call afresh.
    assert await hung_up(server.hung_up)
    assert pool.open_sessions() == 0
    assert await hello(pool, spec) == "hello from hostile"


async def test_a_dripping_reply_ends_at_the_call_timeout(pool: ClientPool, server: HostileServer) -> None:
    spec = spec_of(server)
    with pytest.raises(McpTimeout):
        await pool.call_tool(spec, "slow_drip", {}, timeout=1)
    assert await hung_up(server.hung_up)
    assert await hello(pool, spec) == "hello from hostile"
