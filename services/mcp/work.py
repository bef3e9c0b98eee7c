"""Work for the ``tools`` pool asked from the ingress: a connection test of a configuration, or a
tool call from the frontend. The request waits a bounded time for the worker's answer; past it the
caller follows the event id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from events import payloads
from events.envelope import Event, EventType
from events.publisher import publish
from events.results import await_reply
from schemas.db import TenantContext
from services.context import Backends
from services.mcp.configs import find_config


@dataclass(frozen=True)
class WorkOutcome:
    event_id: str
    # The worker's answer; None while it is still running.
    result: dict[str, Any] | None


async def request_work(backends: Backends, event: Event, wait_seconds: float) -> WorkOutcome:
    if wait_seconds <= 0:
        await publish(backends.redis, backends.names, event)
        return WorkOutcome(event.id, None)
    answer = await await_reply(backends.redis, backends.names, event.id, wait_seconds, publishing=event)
    return WorkOutcome(event.id, answer.payload if answer is not None else None)


async def request_test(
    backends: Backends, ctx: TenantContext, config_id: UUID, wait_seconds: float, correlation_id: str
) -> WorkOutcome:
    """Connect to the server and list its tools, through a tools worker."""
    row = await find_config(backends, ctx, config_id)
    event = Event(
        type=EventType.MCP_TEST_REQUESTED,
        org_id=row.org_id,
        user_id=ctx.user_id,
        correlation_id=correlation_id,
        payload=payloads.McpWork(config_id=str(row.id), reply=True).payload(),
    )
    return await request_work(backends, event, wait_seconds)


@dataclass(frozen=True)
class DirectCall:
    """A tool call from the frontend, outside the agent (which calls through the gateway)."""

    session_id: UUID
    config_id: UUID
    tool: str
    arguments: dict[str, Any]
    timeout_seconds: float | None


async def request_tool_call(
    backends: Backends, ctx: TenantContext, call: DirectCall, wait_seconds: float, correlation_id: str
) -> WorkOutcome:
    """One of the session's MCP tools, called directly (the caller owns the session); progress and
    the outcome also arrive on the session's events as ``tool_call``."""
    row = await find_config(backends, ctx, call.config_id)
    event = Event(
        type=EventType.TOOL_CALL_REQUESTED,
        org_id=row.org_id,
        user_id=ctx.user_id,
        session_id=call.session_id,
        correlation_id=correlation_id,
        payload=payloads.ToolCall(
            config_id=str(row.id),
            tool=call.tool,
            arguments=call.arguments,
            timeout=call.timeout_seconds,
            source="api",
            reply=True,
        ).payload(),
    )
    return await request_work(backends, event, wait_seconds)
