"""Finding 20: the tools worker read a stdio MCP server's stdout a line at a time with no byte
limit (the MCP SDK's stdio client gathers a line until its newline), so a tenant's server printing
without a newline grew the worker's memory without bound and its call waited for the timeout. A
line past AGENTAPI_MCP_MAX_REPLY_BYTES now ends the call as unavailable, the server's processes
are ended, and the next call starts new ones; another configuration's server keeps answering
meanwhile. Real server processes over pipes (in the sandbox where it can be set up)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.security.helpers import limited_pool
from tests.security.hostile_stdio_mcp import FLOOD_BYTES
from workers.mcp_client import ClientPool, McpTimeout, McpUnavailable, ServerSpec

pytestmark = pytest.mark.timeout(120)

LIMIT = 1024 * 1024


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    async with limited_pool(LIMIT) as pool:
        yield pool


def stdio_spec(module: str, *args: str) -> ServerSpec:
    return ServerSpec(
        config_id=uuid.uuid4(),
        version=datetime(2026, 12, 3, tzinfo=UTC),
        transport="stdio",
        endpoint_url=None,
        command=sys.executable,
        args=("-m", module, *args),
        env=(),
    )


def processes_with(marker: str) -> set[int]:
    """The processes (this namespace's ids) whose command line holds ``marker``: the server's, and
    the sandbox's around it."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
        except OSError:
            continue
    return found


async def ended(marker: str, pids: set[int]) -> bool:
    for _ in range(100):
        if not pids & processes_with(marker):
            return True
        await asyncio.sleep(0.1)
    return False


def peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def text_of(pool: ClientPool, spec: ServerSpec, tool: str, arguments: dict[str, str]) -> str:
    result = await pool.call_tool(spec, tool, arguments, timeout=30)
    return str(result["content"][0]["text"])


async def test_an_endless_line_ends_the_call_and_its_server(pool: ClientPool) -> None:
    marker = f"hostile-{uuid.uuid4().hex}"
    hostile = stdio_spec("tests.security.hostile_stdio_mcp", marker)
    good = stdio_spec("tests.fakes.mcp_server", "stdio")
    assert await text_of(pool, hostile, "hello", {}) == "hello"
    assert await text_of(pool, good, "echo", {"text": "before"}) == "echo: before"
    first = processes_with(marker)
    assert first

    peak_rss_reset()
    before = peak_rss()
    flood = asyncio.create_task(pool.call_tool(hostile, "flood", {}, timeout=30))
    # Another tenant's server answers while the flood is read.
    assert await text_of(pool, good, "echo", {"text": "during"}) == "echo: during"
    with pytest.raises(McpUnavailable, match=f"larger than {LIMIT} bytes") as failed:
        await flood
    assert not isinstance(failed.value, McpTimeout)
    # The worker held about one limit of that line, not the whole flood.
    assert peak_rss() - before < FLOOD_BYTES // 2
    assert await ended(marker, first)

    # The next call starts the server afresh.
    assert await text_of(pool, hostile, "hello", {}) == "hello"
    assert processes_with(marker) - first
    assert await text_of(pool, good, "echo", {"text": "after"}) == "echo: after"
