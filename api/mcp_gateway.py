"""The per-session MCP gateway: a Streamable-HTTP MCP endpoint the agent talks to.

``/api/v1/mcp/gateway/{session_id}`` is a fastmcp server mounted in the ingress. It accepts only
the session's own gateway token (minted by the session's host, known to Redis by its SHA-256 while
the host lives; cached per process as events/gateway_tokens.py says), lists the tools of the tenant's MCP configurations as ``<config>__<tool>``, and
turns each call into ``tool_call.requested`` for the tools workers, answering when the result comes
back. The tenant's own tokens stay in the tools workers: the agent never sees them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import get_http_request
from fastmcp.server.low_level import LowLevelServer
from fastmcp.server.providers import Provider
from fastmcp.tools.base import Tool, ToolResult
from mcp_types import ContentBlock
from pydantic import TypeAdapter

from api import mcp_fast_call
from api.state import Resources
from events.audit import audit_event
from events.envelope import Event, EventType
from events.payloads import McpWork, ToolCall
from events.publisher import publish
from schemas.db import TenantContext
from schemas.tables import McpConfiguration
from services.mcp.configs import enabled_configs
from services.mcp.work import request_work
from services.outages import default_outage_exceptions
from services.recent import Recent

log = logging.getLogger(__name__)

SEPARATOR = "__"
SCOPE_KEY = "agentapi.gateway"
_CONTENT = TypeAdapter(list[ContentBlock])
# How long listing waits for a tools worker to connect to a server whose tools are not cached.
LIST_WAIT_SECONDS = 20.0
# How long a session's tool list is reused: fastmcp resolves every call by listing, and each listing
# asks PostgreSQL. A configuration changed or disabled meanwhile is refused by the tools worker,
# which loads it afresh for every call; only the names the agent sees lag by this much. Per session,
# not per user: an agent lists its tools as it starts, and a session started just after its user
# added a server must see that server's tools.
LISTING_SECONDS = 2.0
# How long a session's tool schemas serve the Mcp-Param header check after its last listing.
SCHEMA_SECONDS = 3_600.0
OUTAGES = default_outage_exceptions()
NO_ANSWER = "the tool call got no answer in time"
# A call whose request or wait failed with Redis: it may have reached a tools worker (the request
# goes in the same round trip as the first read), and a tool call must not be run twice blindly.
INTERRUPTED = (
    "the platform's event bus became unavailable during the call; whether the tool ran is unknown"
    " (retry later if running it twice is safe)"
)


@dataclass(frozen=True)
class GatewayIdentity:
    session_id: UUID
    org_id: UUID
    user_id: UUID
    correlation_id: str | None = None


def _identity() -> GatewayIdentity:
    try:
        identity = get_http_request().scope.get(SCOPE_KEY)
    except RuntimeError:
        identity = None
    if not isinstance(identity, GatewayIdentity):
        raise ToolError("the gateway request carries no session identity")
    return identity


class GatewayTool(Tool):
    """A tenant tool as the agent sees it; running it sends the call to a tools worker."""

    config_id: UUID
    # The configuration's version as listed: the tools worker reuses what it loaded for that version.
    config_version: str
    remote_name: str
    call: Callable[[GatewayIdentity, GatewayTool, dict[str, Any]], Any]

    async def run(self, arguments: dict[str, Any], context: Any = None) -> ToolResult:
        return await self.call(_identity(), self, arguments)


class TenantTools(Provider):
    """The tools of the calling session's tenant, looked up per request."""

    def __init__(self, get_resources: Callable[[], Resources]) -> None:
        super().__init__()
        self._resources = get_resources
        self._listings: Recent[UUID, list[Tool]] = Recent(LISTING_SECONDS)
        # The input schemas of each session's last listing, kept while the session is likely alive:
        # a call arrives seconds or minutes after the agent listed, when the listing itself is gone.
        self._schemas: Recent[UUID, dict[str, dict[str, Any]]] = Recent(SCHEMA_SECONDS, size=4_096)

    def input_schema(self, session_id: UUID, name: str) -> dict[str, Any] | None:
        """The schema ``name`` had in the session's own last listing, if the process still has it."""
        return self._schemas.get(session_id, {}).get(name)

    async def _list_tools(self) -> Sequence[Tool]:
        try:
            identity = _identity()
        except ToolError:
            return []  # fastmcp asks outside any request (start-up, task discovery): nothing to show
        return await self.tools_for(identity)

    async def tools_for(self, identity: GatewayIdentity) -> list[Tool]:
        listing = self._listings.get(identity.session_id, None)
        if listing is None:
            listing = await self._listing(identity)
            self._listings.put(identity.session_id, listing)
            self._schemas.put(identity.session_id, {tool.name: tool.parameters for tool in listing})
        return listing

    async def _listing(self, identity: GatewayIdentity) -> list[Tool]:
        res = self._resources()
        ctx = TenantContext(org_id=identity.org_id, user_id=identity.user_id, role="member")
        configs = await enabled_configs(res, ctx)
        listed = await asyncio.gather(*(self._tools_of(res, identity, config) for config in configs))
        return [tool for tools in listed for tool in tools]

    async def _get_tool(self, name: str, version: Any = None) -> Tool | None:
        try:
            identity = _identity()
        except ToolError:
            return None
        return await self.find(identity, name)

    async def find(self, identity: GatewayIdentity, name: str) -> GatewayTool | None:
        """The session's tool called ``name``, as fastmcp's lookup through ``_get_tool`` finds it."""
        for tool in await self.tools_for(identity):
            if tool.name == name and isinstance(tool, GatewayTool):
                return tool
        return None

    async def _tools_of(
        self, res: Resources, identity: GatewayIdentity, config: McpConfiguration
    ) -> list[Tool]:
        cached = await res.redis.get(res.names.mcp_tools(config.id))
        tools: list[dict[str, Any]] | None = None
        if cached:
            entry = json.loads(cached)
            if entry.get("version") == config.updated_at.isoformat():
                tools = entry["tools"]
        if tools is None:
            event = Event(
                type=EventType.MCP_TEST_REQUESTED,
                org_id=identity.org_id,
                user_id=identity.user_id,
                payload=McpWork(config_id=str(config.id), reply=True).payload(),
                **({"correlation_id": identity.correlation_id} if identity.correlation_id else {}),
            )
            answer = (await request_work(res, event, LIST_WAIT_SECONDS)).result
            if answer is None or not answer.get("ok"):
                log.warning("gateway: tools of MCP configuration %s are unavailable", config.id)
                return []
            tools = answer["tools"]
        return [
            GatewayTool(
                name=f"{config.name}{SEPARATOR}{tool['name']}",
                description=tool.get("description") or "",
                parameters=tool.get("input_schema") or {"type": "object"},
                config_id=config.id,
                config_version=config.updated_at.isoformat(),
                remote_name=tool["name"],
                call=self._call,
            )
            for tool in tools
        ]

    async def _call(
        self, identity: GatewayIdentity, tool: GatewayTool, arguments: dict[str, Any]
    ) -> ToolResult:
        res = self._resources()
        event = Event(
            type=EventType.TOOL_CALL_REQUESTED,
            org_id=identity.org_id,
            user_id=identity.user_id,
            session_id=identity.session_id,
            payload=ToolCall(
                config_id=str(tool.config_id),
                version=tool.config_version,
                tool=tool.remote_name,
                arguments=arguments,
                source="gateway",
                reply=True,
            ).payload(),
            **({"correlation_id": identity.correlation_id} if identity.correlation_id else {}),
        )
        waited = res.settings.mcp_call_timeout_seconds + res.settings.mcp_gateway_wait_margin_seconds
        try:
            payload = (await request_work(res, event, waited)).result
        except OUTAGES as exc:
            # Not audited here: the audit stream is on the Redis that just failed. A tools worker
            # that ran the call audits it.
            log.warning("gateway: call %s of session %s interrupted: %s", event.id, identity.session_id, exc)
            raise ToolError(INTERRUPTED) from exc
        if payload is None:
            # The tools worker audits every call it answers; one that never answered (a worker that
            # died with the call in hand: the direct lane does not redeliver it) is audited here.
            await publish(
                res.redis,
                res.names,
                audit_event(
                    org_id=identity.org_id,
                    actor_user_id=identity.user_id,
                    action="mcp.tool_call",
                    outcome="failure",
                    resource_type="mcp_configuration",
                    resource_id=str(tool.config_id),
                    details={
                        "tool": tool.remote_name,
                        "source": "gateway",
                        "call_id": event.id,
                        "arguments": arguments,
                        "error": f"no answer from a tools worker within {waited:.0f} s",
                    },
                    correlation_id=identity.correlation_id,
                    session_id=identity.session_id,
                ),
            )
            raise ToolError(NO_ANSWER)
        if not payload.get("ok"):
            raise ToolError(
                f"{payload.get('error_code', 'error')}: {payload.get('error', 'the tool call failed')}"
            )
        blocks = _CONTENT.validate_python(payload.get("content") or [])
        return ToolResult(content=blocks, structured_content=payload.get("structured_content"))


class _NotKept(dict[str, dict[str, Any]]):
    """fastmcp's server-wide schema map, left empty: see ``GatewayServer``."""

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


class GatewayServer(FastMCP):
    """fastmcp checks a ``tools/call``'s ``Mcp-Param-*`` headers (MCP 2026-07-28) against the tool's
    input schema from one server-wide map of name to schema, filled by every listing and never
    emptied. In the gateway a name (``<config>__<tool>``) is a different tool for each tenant and
    comes from the tenant's own servers: that map would judge one tenant's calls by the schema
    another tenant's server gave the same name, and would grow with every name any server ever
    listed. The check reads the calling session's own last listing instead; a session this process
    has not listed for is not checked, as fastmcp does when a listing fails (the gateway routes
    by the body's arguments, never by those headers)."""

    def __init__(self, tools: TenantTools) -> None:
        super().__init__("agentapi-gateway", providers=[tools])
        self.tenant_tools = tools
        self._wire_input_schemas = _NotKept()

    @property
    def low_level(self) -> LowLevelServer:
        return self._mcp_server

    def _get_tool_input_schema(self, name: str) -> dict[str, Any] | None:
        try:
            identity = _identity()
        except ToolError:
            return None
        return self.tenant_tools.input_schema(identity.session_id, name)


class GatewayAuth:
    """ASGI wrapper: the session's gateway token, and only for that session's path; a well-formed
    ``tools/call`` is answered here (api/mcp_fast_call.py), the rest by fastmcp."""

    def __init__(self, app: Any, get_resources: Callable[[], Resources], server: GatewayServer) -> None:
        self.app = app
        self._resources = get_resources
        self._server = server

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The mount hands over "/<session_id>[/...]"; the MCP app itself lives at "/".
        session_part = scope["path"].strip("/").split("/", 1)[0]
        identity = await self._authenticate(scope, session_part)
        if identity is None:
            await _problem(send, 401, "a valid session gateway token for this session is required")
            return
        scope = {**scope, "path": "/", "raw_path": b"/", SCOPE_KEY: identity}
        if self._resources().settings.mcp_gateway_fast_path and mcp_fast_call.wants_body(scope):
            body, receive = await _read_ahead(receive)
            if await self._fast_call(identity, scope, body, send):
                return
        await self.app(scope, receive, send)

    async def _fast_call(
        self, identity: GatewayIdentity, scope: dict[str, Any], body: bytes, send: Any
    ) -> bool:
        tools = self._server.tenant_tools
        call = mcp_fast_call.recognise(
            scope, body, lambda name: tools.input_schema(identity.session_id, name)
        )
        if call is None:
            return False
        tool = await tools.find(identity, call.name)
        if tool is None:
            return False  # fastmcp's answer to an unknown name, hashed names included
        reply = await mcp_fast_call.answer(
            self._server.low_level, call, lambda: tool.call(identity, tool, call.arguments)
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(reply)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": reply})
        return True

    async def _authenticate(self, scope: dict[str, Any], session_part: str) -> GatewayIdentity | None:
        headers = dict(scope.get("headers") or [])
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        holder = await self._resources().gateway_tokens.holder(token.strip())
        if holder is None or holder.session_id != session_part:
            return None
        correlation = headers.get(b"x-correlation-id", b"").decode("latin-1")[:128] or None
        return GatewayIdentity(UUID(holder.session_id), holder.org_id, holder.user_id, correlation)


async def _read_ahead(receive: Any) -> tuple[bytes, Any]:
    """The request's body, and a ``receive`` that hands it over again before what follows."""
    chunks: list[bytes] = []
    pending: list[dict[str, Any]] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            pending.append(message)
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    pending.insert(0, {"type": "http.request", "body": body, "more_body": False})

    async def replay() -> Any:
        return pending.pop(0) if pending else await receive()

    return body, replay


async def _problem(send: Any, status: int, detail: str) -> None:
    body = json.dumps(
        {"type": "about:blank", "title": "Unauthorized", "status": status, "detail": detail}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"www-authenticate", b'Bearer realm="agentapi-mcp-gateway"'),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def build_gateway(get_resources: Callable[[], Resources]) -> tuple[Any, Any]:
    """The ASGI app to mount and the fastmcp app whose lifespan the ingress must run."""
    server = GatewayServer(TenantTools(get_resources))
    # JSON replies, which api/mcp_fast_call.py's answers are too.
    mcp_app = server.http_app(path="/", stateless_http=True, json_response=True)
    return GatewayAuth(mcp_app, get_resources, server), mcp_app
