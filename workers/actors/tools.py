"""The ``tools`` pool: MCP tool calls and connection tests."""

from __future__ import annotations

import dramatiq

from workers.context import current
from workers.event_context import current_event
from workers.tool_calls import ToolService

# Made on first use, inside the worker's event loop, so pooled clients belong to that loop.
_service: ToolService | None = None
# A call's own timeout ends it first; this only backstops a wedged worker thread.
TIME_LIMIT_MS = int(current().settings.mcp_call_timeout_seconds * 1000) + 120_000


def service() -> ToolService:
    global _service
    if _service is None:
        _service = ToolService(current())
    return _service


# Tool calls are not idempotent on the server's side: a failed call is reported, never retried.
@dramatiq.actor(
    queue_name="tools", actor_name="call_tool", max_retries=0, time_limit=TIME_LIMIT_MS, envelope=True
)
async def call_tool(envelope: str) -> None:
    await service().call_tool(current_event())


@dramatiq.actor(
    queue_name="tools", actor_name="test_mcp", max_retries=0, time_limit=TIME_LIMIT_MS, envelope=True
)
async def test_mcp(envelope: str) -> None:
    await service().list_tools(current_event())
