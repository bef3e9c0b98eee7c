"""A real MCP server for tests, built with fastmcp: stdio, or Streamable HTTP or SSE behind a
bearer token.

    python -m tests.fakes.mcp_server stdio
    python -m tests.fakes.mcp_server http --port P --token T [--token T2 ...] [--host 127.0.0.2]
    python -m tests.fakes.mcp_server sse --port P --token T [--host 127.0.0.2]
    python -m tests.fakes.mcp_server oauth --port P --issuer URL --introspection-secret S

``oauth`` accepts only access tokens the authorization server at ``--issuer`` vouches for (RFC 7662
introspection, as its client ``resource_server``) and publishes RFC 9728 metadata naming it.

Tools: ``echo``, ``add``, ``progress`` (reports progress, then answers), ``fail`` (a tool error),
``connection`` (the caller's TCP address over HTTP, to see a client kept or replaced) and ``hang``
(never answers, for timeouts and the circuit breaker). With ``--routed-echo``, ``echo``'s ``text``
is also an ``Mcp-Param-Text`` header (MCP 2026-07-28's ``x-mcp-header``): the same tool name with
another input schema; ``route_echo`` makes that change while the server runs.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
from typing import Annotated, Any

from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import get_http_request
from pydantic import Field

server = FastMCP("agentapi-test-tools")


@server.tool
def echo(text: str) -> str:
    """Return the text unchanged."""
    return f"echo: {text}"


def routed_echo(text: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Text"})]) -> str:
    """Return the text unchanged; a client sends it as a header as well."""
    return f"echo: {text}"


@server.tool
def route_echo() -> str:
    """From now on ``echo``'s ``text`` is a header as well: its schema changes under clients that
    listed it before."""
    server.local_provider.remove_tool("echo")
    server.tool(routed_echo, name="echo")
    return "echo is routed"


@server.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool
async def progress(steps: int, ctx: Context) -> str:
    """Report progress ``steps`` times, then answer."""
    for step in range(steps):
        await ctx.report_progress(step + 1, steps)
        await asyncio.sleep(0.05)
    return f"done after {steps} steps"


@server.tool
def fail(reason: str) -> str:
    """Always fails with a tool error."""
    raise ToolError(f"refused: {reason}")


@server.tool
def connection() -> str:
    """The caller's TCP address, ``host:port``: a client that keeps its connection open comes back
    on the same port, a new client on another (MCP 2026-07-28 has no server-side session to tell)."""
    peer = get_http_request().client
    return f"{peer.host}:{peer.port}" if peer else "stdio"


@server.tool
async def hang() -> str:
    """Never answers."""
    await asyncio.sleep(3600)
    return "unreachable"


class BearerOnly:
    """ASGI wrapper: every request needs ``Authorization: Bearer <token>``, one of ``tokens``."""

    def __init__(self, app: Any, tokens: list[str]) -> None:
        self.app, self.expected = app, [f"Bearer {token}".encode() for token in tokens]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not any([hmac.compare_digest(given, expected) for expected in self.expected]):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
                await send({"type": "http.response.body", "body": b"bearer token required"})
                return
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "http", "sse", "oauth"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    # Repeatable: each is accepted (a refreshed token beside the old one).
    parser.add_argument("--token", action="append", default=[])
    parser.add_argument("--issuer", default="")
    parser.add_argument("--introspection-secret", default="")
    parser.add_argument("--routed-echo", action="store_true")
    args = parser.parse_args()
    if args.routed_echo:
        route_echo()
    if args.transport == "stdio":
        server.run(transport="stdio", show_banner=False)
        return
    import uvicorn

    if args.transport == "oauth":
        from fastmcp.server.auth import RemoteAuthProvider
        from fastmcp.server.auth.providers.introspection import IntrospectionTokenVerifier

        server.auth = RemoteAuthProvider(
            token_verifier=IntrospectionTokenVerifier(
                introspection_url=f"{args.issuer}/introspect",
                client_id="resource_server",
                client_secret=args.introspection_secret,
            ),
            authorization_servers=[args.issuer],
            base_url=f"http://127.0.0.1:{args.port}",
        )
        app = server.http_app(path="/mcp")
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")
        return

    if args.transport == "sse":
        app = server.http_app(path="/sse", transport="sse")
    else:
        app = server.http_app(path="/mcp")
    uvicorn.run(
        BearerOnly(app, args.token), host=args.host, port=args.port, log_level="warning", lifespan="on"
    )


if __name__ == "__main__":
    main()
