"""A gateway ``tools/call`` answered without fastmcp's per-request machinery.

fastmcp's app handles each such POST through a Starlette app and the SDK's entry for the protocol
generation (the 2026-07-28 single-exchange entry, or for the handshake era a stateless transport
with its own server session, task and memory streams), a request runner with its middleware chain
and fastmcp's own context, middleware and tool lookup: ~45 % of the ingress's gateway samples under
load, for a call whose work is one Redis round trip. ``recognise`` takes a request only when every
check the SDK makes passes, through the SDK's own functions where it has them: content type,
Accept, the envelope, and at 2026-07-28 duplicated routing headers, the version ladder and the
``Mcp-Param-*`` headers against the session's own listing; the params' surface at the version.
Anything else (an error of any kind, a notification, another method, requestState, unknown
``_meta``, a chunked or large body) goes to fastmcp, which answers it as before. The answer is
shaped by the SDK's own result serializer and the era's JSON encoding, so a call taken here gets
the answer fastmcp would have sent (``tests/test_mcp_fast_call.py`` compares both).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic_core
from fastmcp.exceptions import ToolError
from fastmcp.tools.base import ToolResult
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import ServerRunner
from mcp.server.streamable_http import CONTENT_TYPE_JSON, check_accept_headers
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
    DEFAULT_NEGOTIATED_VERSION,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    CallToolRequestParams,
    CallToolResult,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    TextContent,
    jsonrpc_message_adapter,
)
from mcp_types import methods as _methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
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
_SERVED_VERSIONS = frozenset(MODERN_PROTOCOL_VERSIONS) | frozenset(HANDSHAKE_PROTOCOL_VERSIONS)
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
    """A ``tools/call`` the SDK would dispatch, with what its answer needs."""

    request_id: RequestId
    # The version the SDK would serve it at, and the client's envelope (2026-07-28 only).
    version: str
    client_info: Any
    client_capabilities: Any
    name: str
    arguments: dict[str, Any]

    @property
    def modern(self) -> bool:
        return self.version in MODERN_PROTOCOL_VERSIONS


def wants_body(scope: Mapping[str, Any]) -> bool:
    """Whether the request could be one ``recognise`` takes, judged by its headers alone (so the body
    is read ahead of fastmcp only for such requests): a POST at a protocol version the SDK serves
    (or none: the handshake era's default), with a declared length within the SDK's limit (a larger
    or chunked body is fastmcp's to refuse)."""
    if scope.get("method") != "POST":
        return False
    version = length = None
    for key, value in scope.get("headers") or ():
        if key == _VERSION_HEADER:
            version = value
        elif key == b"content-length":
            length = value
    if version is not None and version.decode("latin-1") not in _SERVED_VERSIONS:
        return False
    return length is not None and length.isdigit() and int(length) <= MAX_BODY_BYTES


def recognise(
    scope: dict[str, Any], body: bytes, schema_of: Callable[[str], dict[str, Any] | None]
) -> FastCall | None:
    """The call, if the SDK would dispatch it as a well-formed ``tools/call``; else None.
    ``schema_of`` gives the tool's input schema from the calling session's own listing."""
    request = Request(scope)
    # Both eras' content-type checks: the transport security's prefix and the handshake
    # transport's exact media type.
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith(CONTENT_TYPE_JSON):
        return None
    if CONTENT_TYPE_JSON not in (part.strip() for part in content_type.split(";")[0].split(",")):
        return None
    if not check_accept_headers(request)[0]:
        return None
    version = request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
    if version is not None and version in MODERN_PROTOCOL_VERSIONS:
        return _modern(scope, request, body, schema_of)
    return _handshake(body, version or DEFAULT_NEGOTIATED_VERSION)


def _modern(
    scope: dict[str, Any], request: Request, body: bytes, schema_of: Callable[[str], dict[str, Any] | None]
) -> FastCall | None:
    """As the SDK's single-exchange entry (``handle_modern_request``) checks it."""
    if find_duplicated_routing_header(request.headers.items()) is not None:
        return None
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not _plain_call(decoded) or not isinstance(decoded["params"].get("_meta"), dict):
        return None
    route = classify_inbound_request(decoded, headers=dict(request.headers))
    if not isinstance(route, InboundModernRoute):
        return None
    typed = _params(route.protocol_version, decoded["params"])
    if typed is None:
        return None
    arguments = typed.arguments or {}
    if arguments or any(key.startswith(_PARAM_HEADER) for key, _ in scope.get("headers") or ()):
        schema = schema_of(typed.name)
        if schema is not None and validate_mcp_param_headers(schema, arguments, request.headers):
            return None
    return FastCall(
        decoded["id"],
        route.protocol_version,
        route.client_info,
        route.client_capabilities,
        typed.name,
        dict(arguments),
    )


def _handshake(body: bytes, version: str) -> FastCall | None:
    """As the SDK's stateless handshake-era transport checks it (no session id to check, no
    ``Mcp-*`` routing headers at these versions), at the version its header names."""
    try:
        decoded = pydantic_core.from_json(body)
        if not isinstance(jsonrpc_message_adapter.validate_python(decoded, by_name=False), JSONRPCRequest):
            return None
    except ValueError:  # pydantic's ValidationError is one
        return None
    if not _plain_call(decoded):
        return None
    typed = _params(version, decoded["params"])
    if typed is None:
        return None
    return FastCall(decoded["id"], version, None, None, typed.name, dict(typed.arguments or {}))


def _plain_call(decoded: Any) -> bool:
    """A ``tools/call`` envelope with nothing fastmcp or the SDK would act on beyond the call."""
    if not isinstance(decoded, dict) or decoded.keys() != _ENVELOPE_KEYS:
        return False
    request_id, params = decoded["id"], decoded["params"]
    if decoded["jsonrpc"] != "2.0" or decoded["method"] != METHOD or not isinstance(params, dict):
        return False
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return False
    meta = params.get("_meta", {})
    return params.keys() <= _PARAM_KEYS and isinstance(meta, dict) and meta.keys() <= _META_KEYS


def _params(version: str, params: dict[str, Any]) -> CallToolRequestParams | None:
    """The params as the SDK's runner validates them at ``version``."""
    try:
        _methods.validate_client_request(METHOD, version, params)
        return CallToolRequestParams.model_validate(params, by_name=False)
    except (KeyError, ValidationError):
        return None


async def answer(server: Server[Any], call: FastCall, run: Callable[[], Awaitable[ToolResult]]) -> bytes:
    """The JSON-RPC response to ``call``: the tool's result, or its failure as an error result, in
    the shape fastmcp's ``tools/call`` handler, the SDK's runner and the era's transport give them."""
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
    connection = Connection.from_envelope(call.version, call.client_info, call.client_capabilities)
    result = ServerRunner(server, connection, None)._serialize(METHOD, call.version, shaped)
    reply = JSONRPCResponse(jsonrpc="2.0", id=call.request_id, result=result)
    if not call.modern:
        return reply.model_dump_json(by_alias=True, exclude_unset=True).encode()
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
