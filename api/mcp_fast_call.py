"""A gateway ``tools/call`` at MCP 2026-07-28, answered without fastmcp's per-request machinery.

fastmcp's app handles each such POST through a Starlette app, the SDK's single-exchange entry, a
request runner with its middleware chain and fastmcp's own context, middleware and tool lookup:
~45 % of the ingress's gateway samples under load, for a call whose work is one Redis round trip.
``recognise`` takes a request only when every check the SDK's entry makes (content type, Accept,
the envelope, duplicated routing headers, the version ladder, the params' surface at that version,
the ``Mcp-Param-*`` headers against the session's own listing) passes, through the SDK's own
functions; anything else (an error of any kind, a notification, another method or protocol
generation, requestState, unknown ``_meta``, a chunked or large body) goes to fastmcp, which
answers it as before. The answer is shaped by the SDK's own result serializer, so a call taken here
gets the bytes fastmcp would have sent (``tests/test_mcp_fast_call.py`` compares both).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastmcp.exceptions import ToolError
from fastmcp.tools.base import ToolResult
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import ServerRunner
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared.inbound import (
    MCP_PARAM_HEADER_PREFIX,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    CallToolRequestParams,
    CallToolResult,
    JSONRPCResponse,
    RequestId,
    TextContent,
)
from mcp_types import methods as _methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from prometheus_client import Counter
from pydantic import ValidationError
from starlette.requests import Request

log = logging.getLogger(__name__)

METHOD = "tools/call"
# What a call's ``_meta`` may hold here: the envelope, and a log level and a progress token, which
# only open notifications that a JSON reply has no stream for (the SDK drops them alike). Anything
# else (a fastmcp component version, a future key) is fastmcp's to read.
_META_KEYS = frozenset(
    {
        PROTOCOL_VERSION_META_KEY,
        CLIENT_INFO_META_KEY,
        CLIENT_CAPABILITIES_META_KEY,
        LOG_LEVEL_META_KEY,
        "progressToken",
    }
)
_PARAM_KEYS = frozenset({"name", "arguments", "_meta"})
_ENVELOPE_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
_VERSION_HEADER = MCP_PROTOCOL_VERSION_HEADER.lower().encode("latin-1")
_PARAM_HEADER = MCP_PARAM_HEADER_PREFIX.lower().encode("latin-1")
MAX_BODY_BYTES = DEFAULT_MAX_REQUEST_BODY_SIZE
# Labelled, so the family has no series in a process that never took this path.
ANSWERED = Counter(
    "agentapi_mcp_gateway_fast_calls_total",
    "Gateway requests answered without fastmcp's app (api/mcp_fast_call.py)",
    ["method"],
)


@dataclass(frozen=True)
class FastCall:
    """A ``tools/call`` the SDK's entry would dispatch, with what its answer needs."""

    request_id: RequestId
    route: InboundModernRoute
    name: str
    arguments: dict[str, Any]


def wants_body(scope: Mapping[str, Any]) -> bool:
    """Whether the request could be one ``recognise`` takes, judged by its headers alone (so the body
    is read ahead of fastmcp only for such requests): a POST at a modern protocol version, with a
    declared length within the SDK's limit (a larger or chunked body is fastmcp's to refuse)."""
    if scope.get("method") != "POST":
        return False
    version = length = None
    for key, value in scope.get("headers") or ():
        if key == _VERSION_HEADER:
            version = value
        elif key == b"content-length":
            length = value
    if version is None or version.decode("latin-1") not in MODERN_PROTOCOL_VERSIONS:
        return False
    return length is not None and length.isdigit() and int(length) <= MAX_BODY_BYTES


def recognise(
    scope: dict[str, Any], body: bytes, schema_of: Callable[[str], dict[str, Any] | None]
) -> FastCall | None:
    """The call, if the SDK's entry would dispatch it as a well-formed ``tools/call``; else None.
    ``schema_of`` gives the tool's input schema from the calling session's own listing."""
    request = Request(scope)
    content_type = request.headers.get("content-type")
    if content_type is None or not content_type.lower().startswith("application/json"):
        return None
    if not check_accept_headers(request)[0]:
        return None
    if find_duplicated_routing_header(request.headers.items()) is not None:
        return None
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict) or decoded.keys() != _ENVELOPE_KEYS:
        return None
    request_id, params = decoded["id"], decoded["params"]
    if decoded["jsonrpc"] != "2.0" or decoded["method"] != METHOD or not isinstance(params, dict):
        return None
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return None
    if not params.keys() <= _PARAM_KEYS or not isinstance(meta := params.get("_meta"), dict):
        return None
    if not meta.keys() <= _META_KEYS:
        return None
    route = classify_inbound_request(decoded, headers=dict(request.headers))
    if not isinstance(route, InboundModernRoute):
        return None
    try:
        _methods.validate_client_request(METHOD, route.protocol_version, params)
        typed = CallToolRequestParams.model_validate(params, by_name=False)
    except (KeyError, ValidationError):
        return None
    arguments = typed.arguments or {}
    if arguments or any(key.startswith(_PARAM_HEADER) for key, _ in scope.get("headers") or ()):
        schema = schema_of(typed.name)
        if schema is not None and validate_mcp_param_headers(schema, arguments, request.headers):
            return None
    return FastCall(request_id, route, typed.name, dict(arguments))


async def answer(server: Server[Any], call: FastCall, run: Callable[[], Awaitable[ToolResult]]) -> bytes:
    """The JSON-RPC response to ``call``: the tool's result, or its failure as an error result, in
    the shape fastmcp's ``tools/call`` handler and the SDK's runner give them."""
    try:
        shaped = _call_tool_result(await run())
    except ToolError as exc:
        shaped = CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
    except Exception as exc:
        # fastmcp turns a tool's unexpected failure into an error result with this text.
        log.exception("gateway: tool %r failed", call.name)
        message = f"Error calling tool {call.name!r}: {exc}"
        shaped = CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
    ANSWERED.labels(METHOD).inc()
    route = call.route
    connection = Connection.from_envelope(
        route.protocol_version, route.client_info, route.client_capabilities
    )
    result = ServerRunner(server, connection, None)._serialize(METHOD, route.protocol_version, shaped)
    reply = JSONRPCResponse(jsonrpc="2.0", id=call.request_id, result=result)
    return json.dumps(
        reply.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":")
    ).encode()


def _call_tool_result(result: ToolResult) -> CallToolResult:
    shaped = result.to_mcp_result()
    if isinstance(shaped, CallToolResult):
        return shaped
    if isinstance(shaped, tuple):
        content, structured = shaped
        return CallToolResult(content=content, structured_content=structured)
    return CallToolResult(content=shaped)
