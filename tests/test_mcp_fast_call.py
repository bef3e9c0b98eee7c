"""The gateway's own answer to a ``tools/call`` (api/mcp_fast_call.py) against fastmcp's: the same
requests, well-formed and not, sent to an ingress with the fast path and to one without it, get
the same status, content type and body; only the well-formed calls are counted as taken here."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import httpx2
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from tests.fixtures.mcp import mcp_server
from tests.fixtures.metrics import scraped_total
from tests.fixtures.stack import Stack, second_ingress
from tests.test_mcp_tools import STACK_ENV as TOOLS_ENV
from tests.test_mcp_tools import create_config, gateway_config, gateway_config_written, start_session
from tests.waiting import until

pytestmark = pytest.mark.timeout(240)

STACK_ENV = {**TOOLS_ENV, "AGENTAPI_METRICS_TOKEN": "scrape-me"}
FAST_CALLS = "agentapi_mcp_gateway_fast_calls_total"


@pytest.fixture(scope="module")
def tools_stack(stack: Stack) -> Stack:
    stack.start_worker("tools", "audit")
    return stack


@pytest.fixture(scope="module")
def plain_ingress(tools_stack: Stack) -> Iterator[str]:
    """A second ingress of the same stack that sends every gateway request through fastmcp."""
    with second_ingress(tools_stack, {"AGENTAPI_MCP_GATEWAY_FAST_PATH": "false"}) as url:
        yield url


@pytest.fixture
async def client(tools_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tools_stack.base_url, timeout=60) as http:
        yield http


async def fast_calls(base_url: str) -> float:
    return await scraped_total(base_url, FAST_CALLS)


async def captured_call(url: str, token: str, tool: str, arguments: dict[str, Any]) -> httpx2.Request:
    """The ``tools/call`` request fastmcp's client (MCP 2026-07-28) sends, as sent."""
    sent: list[httpx2.Request] = []

    async def keep(request: httpx2.Request) -> None:
        sent.append(request)

    def recording(**kwargs: object) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(event_hooks={"request": [keep]}, **kwargs)  # type: ignore[arg-type]

    transport = StreamableHttpTransport(url, auth=token, httpx_client_factory=recording)
    async with Client(transport, timeout=60) as mcp:
        await mcp.call_tool(tool, arguments)
    return next(r for r in reversed(sent) if b'"tools/call"' in r.content)


Case = tuple[str, list[tuple[str, str]], bytes]


def cases(request: httpx2.Request) -> tuple[list[Case], list[Case]]:
    """(calls the gateway answers itself, requests it leaves to fastmcp), from one real call."""
    headers = [
        (k, v) for k, v in request.headers.multi_items() if k.lower() not in {"content-length", "host"}
    ]
    body = json.loads(request.content)

    def envelope(**changes: Any) -> bytes:
        return json.dumps({**body, **changes}).encode()

    def params(**changes: Any) -> bytes:
        return envelope(params={**body["params"], **changes})

    def with_header(name: str, value: str) -> list[tuple[str, str]]:
        return [(k, v) for k, v in headers if k.lower() != name] + [(name, value)]

    meta = body["params"]["_meta"]
    name = body["params"]["name"]
    config = name.split("__", 1)[0]

    def named(tool: str) -> list[tuple[str, str]]:
        return with_header("mcp-name", tool)

    taken = [
        ("the call as sent", headers, request.content),
        ("a string id", headers, envelope(id="call-7")),
        (
            "a tool that fails",
            named(f"{config}__fail"),
            params(name=f"{config}__fail", arguments={"reason": "nope"}),
        ),
        ("an empty text", headers, params(arguments={"text": ""})),
        # The SDK checks only headers the tool's schema declares (test_mcp_tools has one that does).
        ("an Mcp-Param header no schema declares", [*headers, ("mcp-param-text", "other")], request.content),
    ]
    left = [
        ("an unknown tool", named(f"{config}__missing"), params(name=f"{config}__missing")),
        ("a name without a configuration", named("echo"), params(name="echo")),
        ("a name header the body does not name", headers, params(name=f"{config}__add")),
        ("arguments that are not an object", headers, params(arguments=["x"])),
        ("a name that is not a string", headers, params(name=7)),
        ("malformed JSON", headers, b'{"jsonrpc": "2.0", "id": 1,'),
        ("a batch", headers, b"[" + request.content + b"]"),
        ("a notification", headers, json.dumps({k: v for k, v in body.items() if k != "id"}).encode()),
        ("a boolean id", headers, envelope(id=True)),
        ("another JSON-RPC version", headers, envelope(jsonrpc="1.0")),
        ("an unknown envelope member", headers, envelope(extra=1)),
        ("another method", headers, envelope(method="tools/list", params={"_meta": meta})),
        (
            "no protocol version in _meta",
            headers,
            params(_meta={k: v for k, v in meta.items() if "protocolVersion" not in k}),
        ),
        ("an unknown _meta member", headers, params(_meta={**meta, "fastmcp": {"version": "9"}})),
        ("requestState", headers, params(requestState="forged")),
        (
            "a header version the body does not name",
            with_header("mcp-protocol-version", "2099-01-01"),
            request.content,
        ),
        (
            "a duplicated version header",
            [*headers, ("mcp-protocol-version", meta[next(k for k in meta if "protocolVersion" in k)])],
            request.content,
        ),
        ("an Accept without JSON", with_header("accept", "text/event-stream"), request.content),
        ("a content type that is not JSON", with_header("content-type", "text/plain"), request.content),
        ("an oversized body", headers, params(arguments={"text": "x" * (4 * 1024 * 1024)})),
    ]
    # The handshake era (what the agents' CLIs speak), stateless: no routing headers, no envelope.
    plain = [
        (k, v) for k, v in headers if k.lower() not in {"mcp-protocol-version", "mcp-method", "mcp-name"}
    ]

    def handshake(version: str | None, **changes: Any) -> tuple[list[tuple[str, str]], bytes]:
        params = {"name": name, "arguments": {"text": "hi"}, "_meta": {"progressToken": 3}}
        call = {"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": params, **changes}
        return ([*plain, ("mcp-protocol-version", version)] if version else plain), json.dumps(call).encode()

    taken += [
        ("2025-06-18", *handshake("2025-06-18")),
        (
            "2025-11-25, non-ASCII text",
            *handshake("2025-11-25", params={"name": name, "arguments": {"text": "é"}}),
        ),
        ("2025-06-18, the 2026 envelope in _meta", *handshake("2025-06-18", params={**body["params"]})),
        ("no version header (2025-03-26)", *handshake(None)),
        (
            "2025-03-26, a tool that fails",
            *handshake("2025-03-26", params={"name": f"{config}__fail", "arguments": {"reason": "no"}}),
        ),
    ]
    left += [
        ("2025-06-18, an unknown tool", *handshake("2025-06-18", params={"name": f"{config}__missing"})),
        ("no version header, malformed JSON", plain, b'{"jsonrpc": "2.0", "id": 1,'),
        ("no version header, a batch", plain, b"[" + handshake(None)[1] + b"]"),
        (
            "no version header, a notification",
            plain,
            json.dumps({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": name}}).encode(),
        ),
        (
            "2025-06-18, an unknown _meta member",
            *handshake("2025-06-18", params={"name": name, "_meta": {"fastmcp": {}}}),
        ),
        ("2025-06-18, a boolean id", *handshake("2025-06-18", id=True)),
        ("2025-06-18, another method", *handshake("2025-06-18", method="tools/list", params={})),
        (
            "no version header, a content type with another type",
            with_header("content-type", "application/jsonx"),
            handshake(None)[1],
        ),
        (
            "no version header, an Accept without JSON",
            [
                (k, v)
                for k, v in with_header("accept", "text/event-stream")
                if k.lower() not in {"mcp-protocol-version", "mcp-method", "mcp-name"}
            ],
            handshake(None)[1],
        ),
        ("an unknown version header", with_header("mcp-protocol-version", "2024-01-01"), handshake(None)[1]),
    ]
    return taken, left


async def answers(url: str, case: Case) -> tuple[int, str, Any]:
    _, headers, content = case
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(url, content=content, headers=headers)
    kind = response.headers.get("content-type", "")
    return (
        response.status_code,
        kind,
        response.json() if "json" in kind and response.content else response.text,
    )


async def test_the_gateways_own_answers_are_fastmcps(
    client: httpx.AsyncClient, tools_stack: Stack, plain_ingress: str
) -> None:
    token = secrets.token_urlsafe(24)
    with mcp_server("http", f"--token={token}") as url:
        config = await create_config(
            client,
            tools_stack,
            name=f"fast-{secrets.token_hex(3)}",
            transport="http",
            endpoint_url=url,
            auth_type="bearer",
            bearer_token=token,
        )
        session_id = await start_session(client, tools_stack)
        await until(lambda: gateway_config_written(tools_stack, session_id), timeout=60)
        entry = gateway_config(tools_stack, session_id)
        session_token = str(entry["headers"]["Authorization"]).removeprefix("Bearer ")  # type: ignore[index]
        request = await captured_call(
            str(entry["url"]), session_token, f"{config['name']}__echo", {"text": "hi"}
        )
        path = request.url.path
        # Both ingresses list the session's tools before the comparison, so neither answers from a
        # listing the other has not seen.
        for base in (tools_stack.base_url, plain_ingress):
            async with Client(StreamableHttpTransport(base + path, auth=session_token), timeout=60) as mcp:
                await mcp.list_tools()
        taken, left = cases(request)
        for case in taken + left:
            before = await fast_calls(tools_stack.base_url)
            fast, plain = await asyncio.gather(
                answers(tools_stack.base_url + path, case), answers(plain_ingress + path, case)
            )
            assert fast == plain, case[0]
            counted = await fast_calls(tools_stack.base_url) - before
            assert counted == (1 if case in taken else 0), case[0]
            if case in taken:
                assert fast[0] == 200 and "result" in fast[2], case[0]
        assert await fast_calls(plain_ingress) == 0


async def test_a_call_with_another_sessions_token_is_refused(
    client: httpx.AsyncClient, tools_stack: Stack, pg_urls
) -> None:  # type: ignore[no-untyped-def]
    """A well-formed call, sent with the token of another session of the same user or of another
    tenant's session, is refused before any answer of the gateway's own."""
    from tests.fixtures.stack import seed_async

    other_org, other_user = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, other_org, other_user, "Fast Path Other Org")
    mine = await start_session(client, tools_stack)
    sibling = await start_session(client, tools_stack)
    theirs = await start_session(client, tools_stack, org_id=other_org, user_id=other_user, role="owner")
    for session, tenant in [(mine, ()), (sibling, ()), (theirs, (other_org, other_user))]:
        await until(lambda s=session, t=tenant: gateway_config_written(tools_stack, s, *t), timeout=60)
    entry = gateway_config(tools_stack, mine)
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "x__echo", "arguments": {"text": "hi"}},
    }
    before = await fast_calls(tools_stack.base_url)
    for session, tenant in [(sibling, ()), (theirs, (other_org, other_user))]:
        other = gateway_config(tools_stack, session, *tenant)
        response = await client.post(
            str(entry["url"]),
            json=body,
            headers={
                "Authorization": str(other["headers"]["Authorization"]),  # type: ignore[index]
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2026-07-28",
            },
        )
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await fast_calls(tools_stack.base_url) == before
