"""OAuth 2.1 connections to MCP servers through the running system.

A real authorization server (authlib, HTTP on 127.0.0.1, auto-approving one user) and a real MCP
server (fastmcp over Streamable HTTP) that accepts only the tokens that server vouches for. The
platform discovers, registers, authorizes with PKCE, stores sealed tokens, refreshes and revokes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
import redis
from authlib.common.security import generate_token
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from tests.fakes.oauth_server import FakeAuthorizationServer
from tests.fixtures.mcp import mcp_server
from tests.fixtures.stack import Stack, recording_client
from tests.test_mcp_tools import agent_said_prefix, gateway_config
from tests.test_skeleton_e2e import ECHO, named, read_events

pytestmark = pytest.mark.timeout(240)

STACK_ENV = {
    "AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true",
    "AGENTAPI_MCP_CALL_TIMEOUT_SECONDS": "20",
    "AGENTAPI_MAX_SESSIONS_PER_USER": "20",
    "AGENTAPI_MCP_OAUTH_REDIRECT_ALLOWLIST": json.dumps(["https://app.example/oauth/"]),
}
FRONTEND_PAGE = "https://app.example/oauth/done"
CALLBACK = "/api/v1/mcp/oauth/callback"


@pytest.fixture(scope="module")
def auth_server() -> Iterator[FakeAuthorizationServer]:
    server = FakeAuthorizationServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mcp_url(auth_server: FakeAuthorizationServer) -> Iterator[str]:
    secret = f"--introspection-secret={auth_server.resource_server_secret}"
    with mcp_server("oauth", "--issuer", auth_server.url, secret) as url:
        yield url


@pytest.fixture(scope="module")
def oauth_stack(stack: Stack) -> Stack:
    stack.start_worker("tools", "audit", "default")
    return stack


# Every API response body of this module, so tests can show no token ever came back in one.
RESPONSES: list[bytes] = []


@pytest.fixture
async def client(oauth_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with recording_client(oauth_stack, RESPONSES) as http:
        yield http


async def create_oauth_config(
    client: httpx.AsyncClient, stack: Stack, url: str, name: str, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/mcp/configurations",
        json={"name": name, "transport": "http", "endpoint_url": url, "auth_type": "oauth", **extra},
        headers=stack.headers(),
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def connection_of(client: httpx.AsyncClient, stack: Stack, config_id: str) -> str:
    listed = (await client.get("/api/v1/mcp/configurations", headers=stack.headers())).json()
    return next(c["connection"] for c in listed["configurations"] if c["id"] == config_id)


async def authorize(client: httpx.AsyncClient, stack: Stack, config_id: str, **headers: str) -> str:
    """init, then the user's browser at the authorization server: the callback URL it sends them to."""
    init = await client.post(
        "/api/v1/mcp/oauth/init",
        json={"mcp_configuration_id": config_id},
        headers=headers or stack.headers(),
    )
    assert init.status_code == 200, init.text
    async with httpx.AsyncClient(timeout=30) as browser:
        approved = await browser.get(init.json()["authorization_url"])
    assert approved.status_code == 302, approved.text
    location = approved.headers["location"]
    assert location.startswith(f"{stack.base_url}{CALLBACK}?")
    return location


async def connect(client: httpx.AsyncClient, stack: Stack, config_id: str) -> None:
    location = await authorize(client, stack, config_id)
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(location)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert '"type": "oauth_success"' in page.text and "window.opener.postMessage" in page.text


async def call(
    client: httpx.AsyncClient, stack: Stack, session_id: str, config_id: str, text: str
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/sessions/{session_id}/tool-calls",
        json={"config_id": config_id, "tool": "echo", "arguments": {"text": text}},
        headers=stack.headers(),
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    return dict(response.json()["result"])


async def start_session(client: httpx.AsyncClient, stack: Stack, prompt: str | None = None) -> str:
    body = {**ECHO, "prompt": prompt} if prompt else ECHO
    response = await client.post("/api/v1/sessions", json=body, headers=stack.headers())
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def audit_entries(
    client: httpx.AsyncClient, stack: Stack, action: str, count: int
) -> list[dict[str, Any]]:
    """The organization's audit rows of ``action``, once at least ``count`` have been written."""
    admin = stack.headers(role="admin")
    async with asyncio.timeout(60):
        while True:
            page = (await client.get(f"/api/v1/audit?action={action}&limit=100", headers=admin)).json()
            if len(page["entries"]) >= count:
                return list(page["entries"])
            await asyncio.sleep(0.3)


def sealed_tokens(stack: Stack, config_id: str) -> list[tuple[str, str | None, str]]:
    owner = stack.env["AGENTAPI_MIGRATIONS_DATABASE_URL"].replace("postgresql+asyncpg", "postgresql")
    with psycopg.connect(owner) as db:
        return db.execute(
            "SELECT encrypted_access_token, encrypted_refresh_token, status FROM mcp_oauth_tokens"
            " WHERE configuration_id = %s",
            (config_id,),
        ).fetchall()


async def test_connect_then_call_a_tool_through_the_gateway(
    client: httpx.AsyncClient, oauth_stack: Stack, auth_server: FakeAuthorizationServer, mcp_url: str
) -> None:
    config = await create_oauth_config(client, oauth_stack, mcp_url, "drive")
    assert config["connection"] == "not_connected"
    session_id = await start_session(client, oauth_stack, "/env")
    before = await call(client, oauth_stack, session_id, config["id"], "too early")
    assert before["ok"] is False and before["error_code"] == "needs_auth"

    init = await client.post(
        "/api/v1/mcp/oauth/init", json={"mcp_configuration_id": config["id"]}, headers=oauth_stack.headers()
    )
    assert init.status_code == 200, init.text
    query = parse_qs(urlsplit(init.json()["authorization_url"]).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["redirect_uri"] == [f"{oauth_stack.base_url}{CALLBACK}"]
    assert query["resource"] == [mcp_url] and len(query["state"][0]) >= 40
    # The client was registered dynamically, as a public client bound to the platform's callback.
    registered = auth_server.registrations[-1]
    assert registered["redirect_uris"] == [f"{oauth_stack.base_url}{CALLBACK}"]
    assert registered["token_endpoint_auth_method"] == "none"
    assert query["client_id"] != ["resource_server"]

    await connect(client, oauth_stack, config["id"])
    assert await connection_of(client, oauth_stack, config["id"]) == "connected"
    one = (
        await client.get(f"/api/v1/mcp/configurations/{config['id']}", headers=oauth_stack.headers())
    ).json()
    assert one["connection"] == "connected" and "token" not in json.dumps(one).lower().replace("_token", "")
    # At rest the tokens are ciphertexts of the key ring.
    [(access, refresh, status)] = sealed_tokens(oauth_stack, config["id"])
    assert (
        access.startswith("v1.")
        and refresh is not None
        and refresh.startswith("v1.")
        and status == "connected"
    )

    async with asyncio.timeout(60):
        events = await read_events(
            client,
            f"/api/v1/sessions/{session_id}/events",
            oauth_stack.headers(),
            until=agent_said_prefix("AGENTAPI_MCP_CONFIG="),
        )
    assert events
    entry = gateway_config(oauth_stack, session_id)
    token = str(entry["headers"]["Authorization"]).removeprefix("Bearer ")  # type: ignore[index]
    async with Client(StreamableHttpTransport(str(entry["url"]), auth=token), timeout=60) as mcp:
        assert "drive__echo" in {tool.name for tool in await mcp.list_tools()}
        result = await mcp.call_tool("drive__echo", {"text": "through the gateway"})
        assert result.content[0].text == "echo: through the gateway"  # type: ignore[union-attr]

    # The server's tokens are nowhere a client or a log could read them.
    issued = auth_server.issued_tokens()
    assert issued
    for secret in issued:
        assert all(secret.encode() not in body for body in RESPONSES)
        assert secret not in oauth_stack.logs()
    connected = await audit_entries(client, oauth_stack, "mcp.oauth.callback", 1)
    assert any(e["outcome"] == "success" and e["resource_id"] == config["id"] for e in connected)


async def test_an_expired_token_is_refreshed_and_a_revoked_grant_needs_reauth(
    client: httpx.AsyncClient, oauth_stack: Stack, auth_server: FakeAuthorizationServer, mcp_url: str
) -> None:
    config = await create_oauth_config(client, oauth_stack, mcp_url, "files")
    await connect(client, oauth_stack, config["id"])
    session_id = await start_session(client, oauth_stack)
    assert (await call(client, oauth_stack, session_id, config["id"], "first"))["ok"] is True
    [(access_before, refresh_before, _)] = sealed_tokens(oauth_stack, config["id"])

    # The server expires every access token: the MCP server answers 401, the worker refreshes once.
    auth_server.expire_access_tokens()
    refreshed = await call(client, oauth_stack, session_id, config["id"], "after expiry")
    assert refreshed["ok"] is True, refreshed
    [(access_after, refresh_after, status)] = sealed_tokens(oauth_stack, config["id"])
    assert status == "connected" and access_after != access_before and refresh_after != refresh_before

    # The refresh token is revoked at the server: the next refresh is refused, for good.
    auth_server.expire_access_tokens()
    auth_server.revoke_refresh_tokens()
    failed = await call(client, oauth_stack, session_id, config["id"], "after revocation")
    assert failed["ok"] is False and failed["error_code"] == "needs_reauth"
    assert "needs authorization again" in failed["error"] and "/api/v1/mcp/oauth/init" in failed["error"]
    assert await connection_of(client, oauth_stack, config["id"]) == "needs_reauth"
    async with asyncio.timeout(30):
        events = await read_events(
            client,
            f"/api/v1/sessions/{session_id}/events",
            oauth_stack.headers(),
            until=named("mcp_oauth_needs_reauth"),
        )
    notice = json.loads(events[-1].data)
    assert notice["config_id"] == config["id"] and notice["status"] == "needs_reauth"
    assert "invalid_grant" in notice["reason"]
    [reauth] = [
        e
        for e in await audit_entries(client, oauth_stack, "mcp.oauth.needs_reauth", 1)
        if e["resource_id"] == config["id"]
    ]
    assert reauth["outcome"] == "failure" and "invalid_grant" in reauth["details"]["reason"]
    # Until the user connects again, calls fail at once with the same clear reason.
    again = await call(client, oauth_stack, session_id, config["id"], "still revoked")
    assert again["error_code"] == "needs_reauth"

    await connect(client, oauth_stack, config["id"])
    assert (await call(client, oauth_stack, session_id, config["id"], "reconnected"))["ok"] is True
    # Connecting again while connected revokes the grant it replaces.
    active = auth_server.token_count(active=True)
    await connect(client, oauth_stack, config["id"])
    assert auth_server.token_count(active=True) == active
    assert (await call(client, oauth_stack, session_id, config["id"], "replaced"))["ok"] is True

    # Disconnect revokes at the server (RFC 7009) and forgets the tokens.
    revoked_before = len(auth_server.revocations)
    gone = await client.post(
        f"/api/v1/mcp/configurations/{config['id']}/disconnect", headers=oauth_stack.headers()
    )
    assert gone.status_code == 200, gone.text
    assert gone.json() == {
        "config_id": config["id"],
        "connection": "not_connected",
        "scopes": None,
        "expires_at": None,
        "revoked": True,
    }
    assert auth_server.revocations[revoked_before:] == ["refresh_token", "access_token"]
    assert sealed_tokens(oauth_stack, config["id"]) == []
    assert await connection_of(client, oauth_stack, config["id"]) == "not_connected"

    # Deleting a configuration revokes its grants too.
    await connect(client, oauth_stack, config["id"])
    active = auth_server.token_count(active=True)
    deleted = await client.delete(f"/api/v1/mcp/configurations/{config['id']}", headers=oauth_stack.headers())
    assert deleted.status_code == 204
    assert auth_server.token_count(active=True) == active - 1
    assert auth_server.revocations[-2:] == ["refresh_token", "access_token"]


async def test_the_default_pool_refreshes_before_expiry(
    client: httpx.AsyncClient, oauth_stack: Stack, auth_server: FakeAuthorizationServer, mcp_url: str
) -> None:
    config = await create_oauth_config(client, oauth_stack, mcp_url, "calendar")
    # Tokens that enter the refresh margin (300 s) two seconds after they are issued.
    auth_server.access_token_seconds = 302
    try:
        await connect(client, oauth_stack, config["id"])
        [(first, _, _)] = sealed_tokens(oauth_stack, config["id"])
        async with asyncio.timeout(60):
            while sealed_tokens(oauth_stack, config["id"])[0][0] == first:
                await asyncio.sleep(0.3)
    finally:
        auth_server.access_token_seconds = 3600
    [(_, _, status)] = sealed_tokens(oauth_stack, config["id"])
    assert status == "connected"
    session_id = await start_session(client, oauth_stack)
    assert (await call(client, oauth_stack, session_id, config["id"], "fresh"))["ok"] is True
    await client.post(f"/api/v1/mcp/configurations/{config['id']}/disconnect", headers=oauth_stack.headers())


def _state_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["state"][0]


async def test_callbacks_that_must_not_connect_are_refused_and_audited(
    client: httpx.AsyncClient, oauth_stack: Stack, mcp_url: str
) -> None:
    config = await create_oauth_config(client, oauth_stack, mcp_url, "mail")
    store = redis.Redis.from_url(oauth_stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    prefix = oauth_stack.env["AGENTAPI_REDIS_PREFIX"]
    refused: dict[str, httpx.Response] = {}

    async with httpx.AsyncClient(timeout=30) as browser:
        # Replayed: the first use connects, the second is refused.
        location = await authorize(client, oauth_stack, config["id"])
        assert (await browser.get(location)).status_code == 200
        refused["state-reused"] = await browser.get(location)

        # Expired: Redis let the pending authorization go (its TTL ran out).
        location = await authorize(client, oauth_stack, config["id"])
        key = f"{prefix}oauth:state:{_state_of(location)}"
        assert 0 < store.ttl(key) <= 600
        store.pexpire(key, 1)
        while store.exists(key):
            await asyncio.sleep(0.01)
        refused["state-expired"] = await browser.get(location)

        # Another user of the organization posts someone else's code and state.
        location = await authorize(client, oauth_stack, config["id"])
        query = parse_qs(urlsplit(location).query)
        refused["state-other-user"] = await client.post(
            CALLBACK,
            json={"code": query["code"][0], "state": query["state"][0]},
            headers=oauth_stack.headers(user_id=uuid.uuid4()),
        )

        # The wrong PKCE verifier: the authorization server refuses the code.
        location = await authorize(client, oauth_stack, config["id"])
        key = f"{prefix}oauth:state:{_state_of(location)}"
        pending = json.loads(store.get(key) or "{}")
        pending["code_verifier"] = generate_token(64)
        store.set(key, json.dumps(pending), keepttl=True)
        refused["code-rejected"] = await browser.get(location)

        unknown = await browser.get(f"{oauth_stack.base_url}{CALLBACK}?code=x&state={generate_token(40)}")
        missing = await browser.get(f"{oauth_stack.base_url}{CALLBACK}?code=x")

    for reason, response in refused.items():
        assert response.status_code == 400, (reason, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["reason"] == reason
    assert "already used" in refused["state-reused"].json()["detail"]
    assert "expired" in refused["state-expired"].json()["detail"]
    assert "another user" in refused["state-other-user"].json()["detail"]
    assert "Code challenge failed" in refused["code-rejected"].json()["detail"]
    assert unknown.status_code == 400 and unknown.json()["reason"] == "state-unknown"
    assert missing.status_code == 400 and missing.json()["reason"] == "state-missing"

    entries = await audit_entries(client, oauth_stack, "mcp.oauth.callback", 1)
    async with asyncio.timeout(60):
        while {e["details"].get("reason") for e in entries if e["outcome"] == "failure"} < set(refused):
            await asyncio.sleep(0.3)
            entries = await audit_entries(client, oauth_stack, "mcp.oauth.callback", 1)
    failures = {e["details"]["reason"]: e for e in entries if e["outcome"] == "failure"}
    for reason in refused:
        assert failures[reason]["resource_id"] == config["id"]
        assert failures[reason]["details"]["state_user_id"] == str(oauth_stack.user_id)
    assert failures["state-other-user"]["actor_user_id"] != str(oauth_stack.user_id)
    # Only the one replayed authorization connected; refusals left the connection as it was.
    assert len(sealed_tokens(oauth_stack, config["id"])) == 1


async def test_init_refuses_what_it_cannot_authorize(
    client: httpx.AsyncClient, oauth_stack: Stack, mcp_url: str
) -> None:
    plain = await client.post(
        "/api/v1/mcp/configurations",
        json={"name": "plain", "transport": "http", "endpoint_url": mcp_url},
        headers=oauth_stack.headers(),
    )
    oauth = await create_oauth_config(client, oauth_stack, mcp_url, "other")
    cases = [
        ({"mcp_configuration_id": plain.json()["id"]}, 409, "does not use OAuth"),
        ({"mcp_configuration_id": str(uuid.uuid4())}, 404, "no such MCP configuration"),
        (
            {"mcp_configuration_id": oauth["id"], "redirect_uri": "https://evil.example/cb"},
            422,
            "redirect_uri",
        ),
        ({"mcp_configuration_id": oauth["id"], "return_to": "https://evil.example/"}, 422, "return_to"),
        ({"mcp_configuration_id": "not-a-uuid"}, 422, "mcp_configuration_id"),
        ({"mcp_configuration_id": oauth["id"], "extra": 1}, 422, "extra"),
    ]
    for body, status, words in cases:
        response = await client.post("/api/v1/mcp/oauth/init", json=body, headers=oauth_stack.headers())
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert words in response.text
    unauthenticated = await client.post("/api/v1/mcp/oauth/init", json={"mcp_configuration_id": oauth["id"]})
    assert unauthenticated.status_code == 401
    other_org = oauth_stack.headers(org_id=uuid.uuid4())
    response = await client.post(
        "/api/v1/mcp/oauth/init", json={"mcp_configuration_id": oauth["id"]}, headers=other_org
    )
    assert response.status_code in (403, 404)
    # A server that is no OAuth resource: discovery fails with a clear upstream reason.
    bare = await client.post(
        "/api/v1/mcp/configurations",
        json={
            "name": "bare",
            "transport": "http",
            "endpoint_url": f"{oauth_stack.base_url}/health",
            "auth_type": "oauth",
        },
        headers=oauth_stack.headers(),
    )
    failed = await client.post(
        "/api/v1/mcp/oauth/init",
        json={"mcp_configuration_id": bare.json()["id"]},
        headers=oauth_stack.headers(),
    )
    assert failed.status_code == 502 and "protected-resource metadata" in failed.json()["detail"]


async def test_a_frontend_page_posts_the_code_back(
    client: httpx.AsyncClient, oauth_stack: Stack, auth_server: FakeAuthorizationServer, mcp_url: str
) -> None:
    """The seed's flow: the authorization server sends the browser to the frontend's own page,
    which POSTs the code and state with the user's JWT."""
    config = await create_oauth_config(client, oauth_stack, mcp_url, "wiki", oauth={"scopes": ["tools"]})
    init = await client.post(
        "/api/v1/mcp/oauth/init",
        json={"mcp_configuration_id": config["id"], "redirect_uri": FRONTEND_PAGE},
        headers=oauth_stack.headers(),
    )
    assert init.status_code == 200, init.text
    assert auth_server.registrations[-1]["redirect_uris"] == [FRONTEND_PAGE]
    assert parse_qs(urlsplit(init.json()["authorization_url"]).query)["scope"] == ["tools"]
    async with httpx.AsyncClient(timeout=30) as browser:
        approved = await browser.get(init.json()["authorization_url"])
    location = approved.headers["location"]
    assert location.startswith(f"{FRONTEND_PAGE}?")
    query = parse_qs(urlsplit(location).query)
    body = {"code": query["code"][0], "state": query["state"][0]}

    for bad, status in [
        ({"code": "x"}, 422),
        ({**body, "state": "s" * 600}, 422),
        ({**body, "more": 1}, 422),
    ]:
        refused = await client.post(CALLBACK, json=bad, headers=oauth_stack.headers())
        assert refused.status_code == status, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await client.post(CALLBACK, json=body)).status_code == 401

    connected = await client.post(CALLBACK, json=body, headers=oauth_stack.headers())
    assert connected.status_code == 200, connected.text
    answer = connected.json()
    assert answer["config_id"] == config["id"] and answer["connection"] == "connected"
    assert answer["scopes"] == "tools" and answer["expires_at"] is not None
    session_id = await start_session(client, oauth_stack)
    assert (await call(client, oauth_stack, session_id, config["id"], "posted"))["ok"] is True

    # Another organization cannot see, disconnect or authorize this server.
    stranger = oauth_stack.headers(org_id=uuid.uuid4(), user_id=uuid.uuid4())
    for path in [f"/api/v1/mcp/configurations/{config['id']}/disconnect", "/api/v1/mcp/oauth/init"]:
        response = await client.post(path, json={"mcp_configuration_id": config["id"]}, headers=stranger)
        assert response.status_code in (403, 404), response.text
    assert await connection_of(client, oauth_stack, config["id"]) == "connected"


async def test_a_configured_client_is_used_instead_of_registration(
    client: httpx.AsyncClient, oauth_stack: Stack, auth_server: FakeAuthorizationServer, mcp_url: str
) -> None:
    client_id, secret = auth_server.add_confidential_client(f"{oauth_stack.base_url}{CALLBACK}")
    for oauth, words in [
        ({"client_secret": secret}, "oauth.client_secret"),
        ({"client_id": client_id, "colour": "blue"}, "colour"),
        ({"authorization_server": "http://10.1.2.3/"}, "oauth.authorization_server"),
    ]:
        refused = await client.post(
            "/api/v1/mcp/configurations",
            json={
                "name": "bad",
                "transport": "http",
                "endpoint_url": mcp_url,
                "auth_type": "oauth",
                "oauth": oauth,
            },
            headers=oauth_stack.headers(),
        )
        assert refused.status_code == 422 and words in refused.text, refused.text
    config = await create_oauth_config(
        client, oauth_stack, mcp_url, "preset", oauth={"client_id": client_id, "client_secret": secret}
    )
    assert config["has_secret"] is True and secret not in json.dumps(config)
    registrations = len(auth_server.registrations)
    # This time the frontend asks to get the browser back on one of its pages.
    init = await client.post(
        "/api/v1/mcp/oauth/init",
        json={"mcp_configuration_id": config["id"], "return_to": FRONTEND_PAGE},
        headers=oauth_stack.headers(),
    )
    assert init.status_code == 200, init.text
    assert len(auth_server.registrations) == registrations
    assert parse_qs(urlsplit(init.json()["authorization_url"]).query)["client_id"] == [client_id]
    async with httpx.AsyncClient(timeout=30) as browser:
        location = (await browser.get(init.json()["authorization_url"])).headers["location"]
        back = await browser.get(location)
    assert back.status_code == 303
    assert back.headers["location"] == f"{FRONTEND_PAGE}?mcp_oauth=connected&config_id={config['id']}"
    session_id = await start_session(client, oauth_stack)
    auth_server.expire_access_tokens()  # the refresh authenticates with the client's secret
    assert (await call(client, oauth_stack, session_id, config["id"], "preset"))["ok"] is True
    assert all(secret.encode() not in body for body in RESPONSES) and secret not in oauth_stack.logs()
