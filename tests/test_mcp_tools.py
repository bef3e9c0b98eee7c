"""MCP tools through the running system: real MCP servers, tools workers, answers over Redis."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from tests.fixtures.mcp import mcp_server
from tests.fixtures.stack import REPO, Stack, free_port, recording_client, spawn, stop, wait_ready
from tests.test_skeleton_e2e import ECHO, named, read_events
from tests.waiting import until

pytestmark = pytest.mark.timeout(180)

EVERYTHING = str(REPO / "node_modules" / ".bin" / "mcp-server-everything")
STACK_ENV = {
    "AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true",
    "AGENTAPI_MCP_STDIO_ALLOWLIST": json.dumps(
        [[sys.executable, "-m", "tests.fakes.mcp_server"], sys.executable, EVERYTHING]
    ),
    "AGENTAPI_MCP_CALL_TIMEOUT_SECONDS": "20",
    "AGENTAPI_MCP_BREAKER_THRESHOLD": "2",
    "AGENTAPI_MCP_BREAKER_RESET_SECONDS": "3",
    "AGENTAPI_MAX_SESSIONS_PER_USER": "20",
    # Cached tokens outlive every test here: only their revocation can make a gateway refuse them.
    "AGENTAPI_MCP_GATEWAY_TOKEN_CACHE_SECONDS": "60",
}
FASTMCP_STDIO = {
    "transport": "stdio",
    "command": sys.executable,
    "args": ["-m", "tests.fakes.mcp_server", "stdio"],
}


@pytest.fixture(scope="module")
def http_server() -> Iterator[tuple[str, str]]:
    """The test MCP server over Streamable HTTP, accepting only its bearer token."""
    token = secrets.token_urlsafe(24)
    with mcp_server("http", f"--token={token}") as url:
        yield url, token


@pytest.fixture(scope="module")
def tools_stack(stack: Stack) -> Stack:
    stack.start_worker("tools", "audit")
    stack.let_members_add_stdio()
    return stack


# Every API response body of this module, so tests can show a secret never came back in one.
RESPONSES: list[bytes] = []


@pytest.fixture
async def client(tools_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with recording_client(tools_stack, RESPONSES) as http:
        yield http


async def create_config(client: httpx.AsyncClient, stack: Stack, **body: object) -> dict[str, object]:
    body.setdefault("name", f"cfg-{secrets.token_hex(4)}")
    response = await client.post("/api/v1/mcp/configurations", json=body, headers=stack.headers())
    assert response.status_code == 201, response.text
    return response.json()


async def start_session(client: httpx.AsyncClient, stack: Stack, **tenant: object) -> str:
    response = await client.post("/api/v1/sessions", json=ECHO, headers=stack.headers(**tenant))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def call(
    client: httpx.AsyncClient,
    stack: Stack,
    session_id: str,
    config_id: object,
    tool: str,
    **arguments: object,
) -> dict[str, object]:
    response = await client.post(
        f"/api/v1/sessions/{session_id}/tool-calls",
        json={"config_id": str(config_id), "tool": tool, "arguments": arguments},
        headers=stack.headers(),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    return body["result"]


def text_of(result: dict[str, object]) -> str:
    return " ".join(block["text"] for block in result["content"] if block["type"] == "text")  # type: ignore[index, union-attr]


async def test_fastmcp_server_over_stdio(client: httpx.AsyncClient, tools_stack: Stack) -> None:
    config = await create_config(client, tools_stack, **FASTMCP_STDIO)
    tested = await client.post(
        "/api/v1/mcp/test", json={"config_id": config["id"]}, headers=tools_stack.headers()
    )
    assert tested.status_code == 200, tested.text
    result = tested.json()["result"]
    assert result["ok"] is True
    assert {tool["name"] for tool in result["tools"]} >= {"echo", "add", "progress", "hang"}

    session_id = await start_session(client, tools_stack)
    added = await call(client, tools_stack, session_id, config["id"], "add", a=20, b=22)
    assert added["ok"] is True and text_of(added) == "42"
    failed = await call(client, tools_stack, session_id, config["id"], "fail", reason="not today")
    assert failed["ok"] is False and failed["error_code"] == "tool_error" and "not today" in failed["error"]


async def test_fastmcp_server_over_http_with_bearer(
    client: httpx.AsyncClient, tools_stack: Stack, http_server: tuple[str, str]
) -> None:
    url, token = http_server
    config = await create_config(
        client, tools_stack, transport="http", endpoint_url=url, auth_type="bearer", bearer_token=token
    )
    assert "bearer_token" not in config and config["has_secret"] is True
    assert token not in json.dumps(config)
    session_id = await start_session(client, tools_stack)
    echoed = await call(client, tools_stack, session_id, config["id"], "echo", text="over http")
    assert echoed["ok"] is True and text_of(echoed) == "echo: over http"

    # The progress and the outcome also reach the session's event stream.
    done = await call(client, tools_stack, session_id, config["id"], "progress", steps=3)
    assert text_of(done) == "done after 3 steps"
    events = await read_events(
        client,
        f"/api/v1/sessions/{session_id}/events",
        tools_stack.headers(),
        until=lambda e: (
            e.event == "tool_call"
            and json.loads(e.data)["type"] == "tool_call.completed"
            and json.loads(e.data)["tool"] == "progress"
        ),
    )
    progress = [json.loads(e.data) for e in events if e.event == "tool_call"]
    assert [p["progress"] for p in progress if p["type"] == "tool_call.progress"] == [1, 2, 3]

    # A call longer than the Redis client's 5 s socket timeout is still waited for and answered.
    slow = await call(client, tools_stack, session_id, config["id"], "progress", steps=130)
    assert text_of(slow) == "done after 130 steps"

    wrong = await create_config(
        client,
        tools_stack,
        transport="http",
        endpoint_url=url,
        auth_type="bearer",
        bearer_token="wrong-token",
    )
    refused = await call(client, tools_stack, session_id, wrong["id"], "echo", text="x")
    # A refused token is named as such and does not count against the server's breaker.
    assert refused["ok"] is False and refused["error_code"] == "unauthorized" and "401" in refused["error"]


async def test_server_everything_over_stdio(client: httpx.AsyncClient, tools_stack: Stack) -> None:
    config = await create_config(client, tools_stack, transport="stdio", command=EVERYTHING, args=["stdio"])
    tested = await client.post(
        "/api/v1/mcp/test", json={"config_id": config["id"]}, headers=tools_stack.headers()
    )
    result = tested.json()["result"]
    assert result["ok"] is True, result
    names = {tool["name"] for tool in result["tools"]}
    assert "echo" in names
    session_id = await start_session(client, tools_stack)
    echoed = await call(client, tools_stack, session_id, config["id"], "echo", message="hello everything")
    assert echoed["ok"] is True and "hello everything" in text_of(echoed)


async def test_a_hanging_server_times_out_then_the_breaker_opens_and_closes(
    client: httpx.AsyncClient, tools_stack: Stack
) -> None:
    config = await create_config(client, tools_stack, **FASTMCP_STDIO)
    session_id = await start_session(client, tools_stack)

    async def hang() -> dict[str, object]:
        response = await client.post(
            f"/api/v1/sessions/{session_id}/tool-calls",
            json={"config_id": config["id"], "tool": "hang", "timeout_seconds": 1},
            headers=tools_stack.headers(),
        )
        return response.json()["result"]

    first = await hang()
    assert first["ok"] is False and first["error_code"] == "timeout"
    # The worker stays healthy: an ordinary call right after works.
    assert text_of(await call(client, tools_stack, session_id, config["id"], "add", a=1, b=1)) == "2"
    second = await hang()
    third = await hang()
    assert (second["error_code"], third["error_code"]) == ("timeout", "timeout")
    # Two timeouts in a row (the threshold): the breaker is open and fails fast without calling.
    fast = await call(client, tools_stack, session_id, config["id"], "add", a=2, b=2)
    assert fast["ok"] is False and fast["error_code"] == "circuit_open"

    async def closed_again() -> bool:
        answer = await call(client, tools_stack, session_id, config["id"], "add", a=2, b=2)
        return answer["ok"] is True and text_of(answer) == "4"

    # After its cool-down the breaker lets a call through, which closes it.
    await until(closed_again, 30, "the breaker let a call through again")


def agent_said_prefix(prefix: str):  # type: ignore[no-untyped-def]
    def match(sse) -> bool:  # type: ignore[no-untyped-def]
        if sse.event != "message_update":
            return False
        data = json.loads(sse.data)
        return data["role"] == "agent" and prefix in data["message"] and data["type"] == "message.completed"

    return match


def gateway_config(
    stack: Stack, session_id: str, org_id: object = None, user_id: object = None
) -> dict[str, object]:
    """What the agent was given: the MCP config file in its session's home."""
    workspace = (
        Path(stack.env["AGENTAPI_WORKSPACE_ROOT"])
        / str(org_id or stack.org_id)
        / str(user_id or stack.user_id)
        / session_id
    )
    return json.loads((workspace / ".home" / ".agentapi" / "mcp.json").read_text())["mcpServers"]["agentapi"]


async def test_the_gateway_serves_tenant_tools_to_the_session_token_only(
    client: httpx.AsyncClient, tools_stack: Stack, http_server: tuple[str, str]
) -> None:
    url, bearer = http_server
    config = await create_config(
        client,
        tools_stack,
        name="remote",
        transport="http",
        endpoint_url=url,
        auth_type="bearer",
        bearer_token=bearer,
    )
    created = await client.post(
        "/api/v1/sessions", json={**ECHO, "prompt": "/env"}, headers=tools_stack.headers()
    )
    session_id = str(created.json()["id"])
    async with asyncio.timeout(60):
        events = await read_events(
            client,
            f"/api/v1/sessions/{session_id}/events",
            tools_stack.headers(),
            until=agent_said_prefix("AGENTAPI_MCP_CONFIG="),
        )
    # Without whitespace, so a value the terminal wrapped still reads as one string.
    agent_environment = "".join(json.loads(events[-1].data)["message"].split())
    entry = gateway_config(tools_stack, session_id)
    gateway_url = str(entry["url"])
    session_token = str(entry["headers"]["Authorization"]).removeprefix("Bearer ")  # type: ignore[index]
    assert gateway_url == f"{tools_stack.base_url}/api/v1/mcp/gateway/{session_id}"

    raw: list[bytes] = []

    async def keep_body(response: httpx2.Response) -> None:
        raw.append(await response.aread())

    def capture(**kwargs: object) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(event_hooks={"response": [keep_body]}, **kwargs)  # type: ignore[arg-type]

    transport = StreamableHttpTransport(gateway_url, auth=session_token, httpx_client_factory=capture)
    async with Client(transport, timeout=60) as mcp:
        names = {tool.name for tool in await mcp.list_tools()}
        assert {"remote__echo", "remote__add"} <= names
        result = await mcp.call_tool("remote__echo", {"text": "via the gateway"})
        assert result.content[0].text == "echo: via the gateway"  # type: ignore[union-attr]
        failed = await mcp.call_tool("remote__fail", {"reason": "nope"}, raise_on_error=False)
        assert failed.is_error

    # The tenant's bearer token is nowhere the agent or anyone else could read it.
    assert raw and all(bearer.encode() not in body for body in raw)
    assert bearer not in agent_environment and "AGENTAPI_MCP_CONFIG=" in agent_environment
    assert bearer not in json.dumps(entry)
    assert bearer not in tools_stack.logs()
    assert RESPONSES and all(bearer.encode() not in body for body in RESPONSES)
    messages = await client.get(f"/api/v1/sessions/{session_id}/messages", headers=tools_stack.headers())
    assert bearer not in "".join(messages.text.split())

    # Only this session's live token opens this session's gateway.
    for token, path in [
        ("not-a-token", gateway_url),
        (session_token, gateway_url.rsplit("/", 1)[0] + f"/{config['id']}"),
    ]:
        denied = await client.post(path, json={}, headers={"Authorization": f"Bearer {token}"})
        assert denied.status_code == 401
        assert denied.headers["content-type"].startswith("application/problem+json")
    await client.delete(f"/api/v1/sessions/{session_id}", headers=tools_stack.headers())
    await read_events(
        client, f"/api/v1/sessions/{session_id}/events", tools_stack.headers(), until=named("session_ended")
    )
    after_end = await client.post(gateway_url, json={}, headers={"Authorization": f"Bearer {session_token}"})
    assert after_end.status_code == 401


async def test_every_ingress_refuses_a_session_token_once_the_session_ended(
    client: httpx.AsyncClient, tools_stack: Stack
) -> None:
    """Each ingress process caches the gateway tokens it checked; the session's end reaches them all."""
    port = free_port()
    second = spawn(["serve", "--port", str(port)], tools_stack.env, tools_stack.log_file)
    try:
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}", second)
        session_id = await start_session(client, tools_stack)
        await until(lambda: gateway_config_written(tools_stack, session_id), timeout=60)
        entry = gateway_config(tools_stack, session_id)
        path = str(entry["url"]).removeprefix(tools_stack.base_url)
        bearer = {"Authorization": str(entry["headers"]["Authorization"])}  # type: ignore[index]
        ingresses = [tools_stack.base_url, f"http://127.0.0.1:{port}"]
        async with httpx.AsyncClient(timeout=30) as http:
            for base in ingresses:
                admitted = await http.post(base + path, json={}, headers=bearer)
                assert admitted.status_code != 401, admitted.text
            await client.delete(f"/api/v1/sessions/{session_id}", headers=tools_stack.headers())
            await read_events(
                client,
                f"/api/v1/sessions/{session_id}/events",
                tools_stack.headers(),
                until=named("session_ended"),
            )
            for base in ingresses:
                assert (await http.post(base + path, json={}, headers=bearer)).status_code == 401
    finally:
        await asyncio.to_thread(stop, second)


async def test_a_tool_name_two_tenants_list_is_checked_against_each_callers_own_schema(
    client: httpx.AsyncClient, tools_stack: Stack, http_server: tuple[str, str], pg_urls
) -> None:  # type: ignore[no-untyped-def]
    """Two tenants name a configuration alike, and their servers give ``echo`` different schemas:
    the other tenant's routes ``text`` as an ``Mcp-Param-Text`` header (MCP 2026-07-28). The gateway
    checks a call's headers against the calling session's own listing. fastmcp's one server-wide
    map of name to schema judged this tenant's call by the schema the other tenant listed last, and
    refused it for the header its own listing never asked for."""
    from tests.fixtures.stack import seed_async

    url, bearer = http_server
    other_org, other_user = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, other_org, other_user, "Routing MCP Org")
    other = {"org_id": other_org, "user_id": other_user, "role": "owner"}
    routed_token = secrets.token_urlsafe(24)
    with mcp_server("http", f"--token={routed_token}", "--routed-echo") as routed_url:
        name = f"shared-{secrets.token_hex(3)}"
        mine = await create_config(
            client,
            tools_stack,
            name=name,
            transport="http",
            endpoint_url=url,
            auth_type="bearer",
            bearer_token=bearer,
        )
        theirs = await client.post(
            "/api/v1/mcp/configurations",
            json={
                "name": name,
                "transport": "http",
                "endpoint_url": routed_url,
                "auth_type": "bearer",
                "bearer_token": routed_token,
            },
            headers=tools_stack.headers(**other),
        )
        assert theirs.status_code == 201, theirs.text
        my_session = await start_session(client, tools_stack)
        their_session = await start_session(client, tools_stack, **other)
        await until(lambda: gateway_config_written(tools_stack, my_session), timeout=60)
        await until(
            lambda: gateway_config_written(tools_stack, their_session, other_org, other_user), timeout=60
        )

        sent: list[httpx2.Request] = []

        async def keep(request: httpx2.Request) -> None:
            sent.append(request)

        def recording(**kwargs: object) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(event_hooks={"request": [keep]}, **kwargs)  # type: ignore[arg-type]

        def gateway(session_id: str, *tenant: object) -> Client:  # type: ignore[type-arg]
            entry = gateway_config(tools_stack, session_id, *tenant)
            token = str(entry["headers"]["Authorization"]).removeprefix("Bearer ")  # type: ignore[index]
            transport = StreamableHttpTransport(str(entry["url"]), auth=token, httpx_client_factory=recording)
            return Client(transport, timeout=60)

        tool = f"{name}__echo"
        async with gateway(my_session) as me, gateway(their_session, other_org, other_user) as them:
            mine_listed = {t.name: t.input_schema for t in await me.list_tools()}
            assert "x-mcp-header" not in json.dumps(mine_listed[tool])
            # The other tenant lists after this one: its schema is the last one fastmcp saw.
            theirs_listed = {t.name: t.input_schema for t in await them.list_tools()}
            assert theirs_listed[tool]["properties"]["text"]["x-mcp-header"] == "Text"
            answer = await me.call_tool(tool, {"text": "mine"})
            assert answer.content[0].text == "echo: mine"  # type: ignore[union-attr]
            answer = await them.call_tool(tool, {"text": "theirs"})
            assert answer.content[0].text == "echo: theirs"  # type: ignore[union-attr]
        # Their own schema is still enforced: the same call with a header that contradicts the
        # body is refused before it reaches a tools worker.
        call_request = next(r for r in reversed(sent) if b'"tools/call"' in r.content)
        assert call_request.headers["mcp-param-text"] == "theirs"
        forged = {**call_request.headers, "mcp-param-text": "forged"}
        async with httpx.AsyncClient(timeout=30) as http:
            refused = await http.post(str(call_request.url), content=call_request.content, headers=forged)
        assert refused.status_code == 400, refused.text
        assert "Mcp-Param-Text" in refused.text
    assert mine["id"] != theirs.json()["id"]


def gateway_config_written(
    stack: Stack, session_id: str, org_id: object = None, user_id: object = None
) -> bool:
    try:
        return bool(gateway_config(stack, session_id, org_id, user_id))
    except (OSError, ValueError, KeyError):
        return False


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"transport": "http", "endpoint_url": "http://93.184.216.34/mcp"}, "endpoint_url", "must use https"),
        ({"transport": "http", "endpoint_url": "https://10.0.0.8/mcp"}, "endpoint_url", "private"),
        ({"transport": "sse", "endpoint_url": "https://169.254.169.254/sse"}, "endpoint_url", "metadata"),
        ({"transport": "http", "endpoint_url": "https://[fd00::1]/mcp"}, "endpoint_url", "private"),
        ({"transport": "stdio", "command": "/bin/sh", "args": ["-c", "id"]}, "command", "allowlist"),
        (
            {"transport": "stdio", "command": sys.executable, "args": ["-m", "x;id"]},
            "args[1]",
            "metacharacters",
        ),
        ({"transport": "stdio", "command": sys.executable, "args": ["a|b"]}, "args[0]", "metacharacters"),
    ],
)
async def test_configurations_pointing_somewhere_unsafe_are_422(
    client: httpx.AsyncClient, tools_stack: Stack, body: dict[str, object], field: str, words: str
) -> None:
    response = await client.post(
        "/api/v1/mcp/configurations", json={"name": "unsafe", **body}, headers=tools_stack.headers()
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert words in problem["detail"]
    assert any(error["field"] == field for error in problem["errors"])


async def test_configuration_rules_scopes_and_tenants(
    client: httpx.AsyncClient, tools_stack: Stack, pg_urls
) -> None:  # type: ignore[no-untyped-def]
    from tests.fixtures.stack import seed_async

    member = tools_stack.headers()
    denied = await client.post(
        "/api/v1/mcp/configurations",
        json={"name": "orgwide", "scope": "organization", **FASTMCP_STDIO},
        headers=member,
    )
    assert denied.status_code == 403
    admin = tools_stack.headers(role="admin")
    org_config = (
        await client.post(
            "/api/v1/mcp/configurations",
            json={"name": "orgwide", "scope": "organization", **FASTMCP_STDIO},
            headers=admin,
        )
    ).json()
    duplicate = await client.post(
        "/api/v1/mcp/configurations",
        json={"name": "orgwide", "scope": "organization", **FASTMCP_STDIO},
        headers=admin,
    )
    assert duplicate.status_code == 409
    listed = (await client.get("/api/v1/mcp/configurations?limit=100", headers=member)).json()[
        "configurations"
    ]
    assert org_config["id"] in {c["id"] for c in listed}
    assert (
        await client.delete(f"/api/v1/mcp/configurations/{org_config['id']}", headers=member)
    ).status_code == 403

    other_org, other_user = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, other_org, other_user, "Other MCP Org")
    other = tools_stack.headers(org_id=other_org, user_id=other_user, role="owner")
    for method, path in [
        ("GET", f"/api/v1/mcp/configurations/{org_config['id']}"),
        ("DELETE", f"/api/v1/mcp/configurations/{org_config['id']}"),
    ]:
        response = await client.request(method, path, headers=other)
        assert response.status_code == 404 and "orgwide" not in response.text
    put = await client.put(
        f"/api/v1/mcp/configurations/{org_config['id']}",
        json={"name": "stolen", **FASTMCP_STDIO},
        headers=other,
    )
    assert put.status_code == 404
    tested = await client.post("/api/v1/mcp/test", json={"config_id": org_config["id"]}, headers=other)
    assert tested.status_code == 404
    other_listing = (await client.get("/api/v1/mcp/configurations", headers=other)).json()["configurations"]
    assert org_config["id"] not in {c["id"] for c in other_listing}
    assert (
        await client.delete(f"/api/v1/mcp/configurations/{org_config['id']}", headers=admin)
    ).status_code == 204


async def test_the_gateway_keeps_the_upstream_client_until_the_configuration_changes(
    client: httpx.AsyncClient, tools_stack: Stack, http_server: tuple[str, str]
) -> None:
    url, bearer = http_server
    body = {
        "name": f"kept{secrets.token_hex(3)}",
        "transport": "http",
        "endpoint_url": url,
        "auth_type": "bearer",
        "bearer_token": bearer,
    }
    config = await create_config(client, tools_stack, **body)
    session_id = await start_session(client, tools_stack)
    await read_events(
        client,
        f"/api/v1/sessions/{session_id}/events",
        tools_stack.headers(),
        until=lambda sse: sse.event == "status_change" and json.loads(sse.data)["status"] == "stable",
    )
    entry = gateway_config(tools_stack, session_id)
    token = str(entry["headers"]["Authorization"]).removeprefix("Bearer ")  # type: ignore[index]
    tool = f"{body['name']}__connection"
    async with Client(StreamableHttpTransport(str(entry["url"]), auth=token), timeout=60) as mcp:

        async def upstream_peer() -> str:
            result = await mcp.call_tool(tool, {})
            return str(result.content[0].text)  # type: ignore[union-attr]

        # The tools worker's client and its connection to the server carry call after call.
        first = await upstream_peer()
        assert {await upstream_peer() for _ in range(5)} == {first}
        edited = await client.put(
            f"/api/v1/mcp/configurations/{config['id']}", json=body, headers=tools_stack.headers()
        )
        assert edited.status_code == 200, edited.text
        # Once the gateway lists the new version (it reuses a listing for 2 s), the worker opens a
        # new client for it, and keeps that one.
        async with asyncio.timeout(30):
            while (after := await upstream_peer()) == first:
                await asyncio.sleep(0.2)
        assert {await upstream_peer() for _ in range(5)} == {after}
    await client.delete(f"/api/v1/sessions/{session_id}", headers=tools_stack.headers())
