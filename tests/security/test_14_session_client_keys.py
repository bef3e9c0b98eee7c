"""Session client keys (issue 22, "clients unchanged"): a key minted for one session drives that
session's root-path alias and nothing else. It never reaches another session (another user's,
another organization's), never an ``/api/v1`` endpoint; an expired, revoked, malformed or unknown
key is a 401 problem, a key of an ended session a 410, and a member mints keys only for what they
may see. Minting, revoking and what a key does are on the audit trail."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
import redis.asyncio
from httpx_sse import aconnect_sse

from events.streams import Names
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, seed_async
from tests.security.helpers import add_member, assert_problem
from tests.test_skeleton_e2e import ECHO
from tests.waiting import until

pytestmark = pytest.mark.timeout(180)
ALIAS_GETS = ("/status", "/messages", "/internal/screen")


def basic(key: str, password: str = "") -> dict[str, str]:
    """What httpx sends for ``http://KEY@host``: the key as the Basic user name."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def stable(client: httpx.AsyncClient, session_id: str, headers: dict[str, str]) -> None:
    async def settled() -> bool:
        status = (await client.get(f"/api/v1/sessions/{session_id}/status", headers=headers)).json()
        return status["status"] == "stable" and status["session_status"] in ("running", "stable")

    await until(settled, 60, f"session {session_id} is stable")


async def echo_session(
    client: httpx.AsyncClient, headers: dict[str, str], prompt: str, started: list[tuple[str, dict[str, str]]]
) -> str:
    """A live echo-agent session that has answered ``prompt`` (noted in ``started`` to end it later)."""
    created = await client.post("/api/v1/sessions", json={**ECHO, "prompt": prompt}, headers=headers)
    assert created.status_code == 202, created.text
    session_id: str = created.json()["id"]
    started.append((session_id, headers))

    async def answered() -> bool:
        messages = await client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers)
        return any(m["content"] == f"echo: {prompt}" for m in messages.json()["messages"])

    await until(answered, 60, f"the echo agent answered {prompt!r}")
    await stable(client, session_id, headers)
    return session_id


async def mint(
    client: httpx.AsyncClient, session_id: str, headers: dict[str, str], **body: object
) -> dict[str, str]:
    answer = await client.post(f"/api/v1/sessions/{session_id}/client-keys", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    minted: dict[str, str] = answer.json()
    return minted


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        yield http


@pytest.fixture
async def started(client: httpx.AsyncClient) -> AsyncIterator[list[tuple[str, dict[str, str]]]]:
    """The sessions a test started, ended afterwards: each holds a sessions-worker thread."""
    sessions: list[tuple[str, dict[str, str]]] = []
    yield sessions
    for session_id, headers in sessions:
        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)


async def test_a_key_drives_its_session_at_the_root(
    client: httpx.AsyncClient, stack: Stack, started: list[tuple[str, dict[str, str]]]
) -> None:
    owner = stack.headers()
    session_id = await echo_session(client, owner, "key round trip", started)
    minted = await mint(client, session_id, owner)
    key = minted["key"]
    assert key.startswith("ask_") and minted["url"] == f"http://{key}@{stack.base_url.split('//')[1]}"
    for headers in (basic(key), basic(key, "any password"), bearer(key)):
        status = await client.get("/status", headers=headers)
        assert status.status_code == 200, status.text
        assert status.json()["status"] == "stable" and status.json()["agent_type"] == "custom"
        messages = (await client.get("/messages", headers=headers)).json()["messages"]
        assert [m["content"] for m in messages[1:]] == ["key round trip", "echo: key round trip"]
        screen = await client.get("/internal/screen", headers=headers)
        assert "echo: key round trip" in screen.json()["screen"]
    sent = await client.post("/message", json={"content": "via the alias"}, headers=basic(key))
    assert sent.json() == {"ok": True}
    async with aconnect_sse(client, "GET", "/events", headers=basic(key)) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if sse.event == "message_update" and json.loads(sse.data)["message"] == "echo: via the alias":
                break
    raw = await client.post("/message", json={"content": "x", "type": "raw"}, headers=bearer(key))
    assert raw.json() == {"ok": True}
    # The document stays public, beside the alias, as coder/agentapi serves it.
    document = await client.get("/openapi.json", headers=basic(key))
    assert document.status_code == 200 and "/status" in document.json()["paths"]
    # Sent as a header, the key is in no log line (the access log shows paths only).
    assert key not in stack.logs()


async def test_a_key_reaches_no_other_session_and_no_api_endpoint(
    client: httpx.AsyncClient, stack: Stack, started: list[tuple[str, dict[str, str]]]
) -> None:
    owner = stack.headers()
    mine = await echo_session(client, owner, "session A", started)
    other_user, other = await add_member(client, stack, "member")
    theirs = await echo_session(client, other, "session B", started)
    other_org = uuid.uuid4()
    await seed_async(stack.env["AGENTAPI_MIGRATIONS_DATABASE_URL"], other_org, other_user, "Other Org")
    elsewhere = await echo_session(
        client, stack.headers(org_id=other_org, user_id=other_user), "session C", started
    )
    key = (await mint(client, mine, owner))["key"]

    # At the root the key answers for its own session only.
    messages = (await client.get("/messages", headers=basic(key))).json()["messages"]
    assert [m["content"] for m in messages[1:]] == ["session A", "echo: session A"]
    # Everywhere else it is no credential at all, for its own session too.
    for path in (
        f"/api/v1/sessions/{mine}/status",
        f"/api/v1/sessions/{theirs}/status",
        f"/api/v1/sessions/{elsewhere}/messages",
        "/api/v1/sessions",
        f"/api/v1/orgs/{stack.org_id}/members",
        "/api/v1/chat/stream",
    ):
        for headers in (basic(key), bearer(key)):
            assert_problem(await client.get(path, headers=headers), 401)
    for path, body in (
        (f"/api/v1/sessions/{theirs}/message", {"content": "hi"}),
        (f"/api/v1/sessions/{mine}/client-keys", {}),
        ("/api/v1/chat", {"content": "hi", "session_id": theirs}),
        ("/api/v1/sessions", ECHO),
    ):
        assert_problem(await client.post(path, json=body, headers=basic(key)), 401)
    assert_problem(await client.delete(f"/api/v1/sessions/{mine}", headers=bearer(key)), 401)
    # A JWT does not reach the alias: it names no session.
    for path in ALIAS_GETS:
        assert_problem(await client.get(path, headers=owner), 401)
    # The JWT routes keep working as before.
    assert (await client.get(f"/api/v1/sessions/{mine}/status", headers=owner)).status_code == 200


async def test_malformed_unknown_expired_and_revoked_keys_are_401(
    client: httpx.AsyncClient, stack: Stack, started: list[tuple[str, dict[str, str]]]
) -> None:
    owner = stack.headers()
    session_id = await echo_session(client, owner, "key lifetimes", started)
    unknown = "ask_" + "A" * 43
    for headers in (
        bearer(unknown),
        basic(unknown),
        bearer("ask_short"),
        basic("ask_" + "é" * 43),
        basic("not-a-key"),
        basic(""),
        {"Authorization": "Basic %%%not base64%%%"},
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:").decode()},
        {"Authorization": "Basic"},
        {"Authorization": "Bearer ask_" + "A" * 5000},
        {},
    ):
        for path in ALIAS_GETS:
            assert_problem(await client.get(path, headers=headers), 401)

    # Lifetimes: shorter than the configured one may be asked, longer may not.
    assert_problem(
        await client.post(
            f"/api/v1/sessions/{session_id}/client-keys", json={"ttl_seconds": 10**6}, headers=owner
        ),
        422,
    )
    assert_problem(
        await client.post(
            f"/api/v1/sessions/{session_id}/client-keys", json={"ttl_seconds": 5}, headers=owner
        ),
        422,
    )
    short = await mint(client, session_id, owner, ttl_seconds=120)
    assert (await client.get("/status", headers=basic(short["key"]))).status_code == 200
    # Expiry is Redis's: its TTL running out is what makes a key unknown.
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    db = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"])
    try:
        stored = names.client_key(hashlib.sha256(short["key"].encode()).hexdigest())
        assert 0 < await db.ttl(stored) <= 120
        assert short["key"].encode() not in b"".join(
            [await db.get(k) or b"" for k in await db.keys(f"{names.prefix}clientkey:*")]
        )
        await db.pexpire(stored, 1)
        await until(lambda: _gone(db, stored), 10, "the key expired")
    finally:
        await db.aclose()
    assert "unknown, expired or revoked" in str(
        assert_problem(await client.get("/status", headers=basic(short["key"])), 401)["detail"]
    )

    # Revoking ends every key of the session at once; a key minted afterwards works.
    first, second = (
        (await mint(client, session_id, owner))["key"],
        (await mint(client, session_id, owner))["key"],
    )
    revoked = await client.delete(f"/api/v1/sessions/{session_id}/client-keys", headers=owner)
    assert revoked.status_code == 200 and revoked.json() == {"revoked": 2}
    for key in (first, second):
        assert_problem(await client.get("/status", headers=bearer(key)), 401)
    fresh = (await mint(client, session_id, owner))["key"]
    assert (await client.get("/status", headers=bearer(fresh))).status_code == 200


async def _gone(db: redis.asyncio.Redis, key: str) -> bool:
    return not await db.exists(key)


async def test_a_key_of_an_ended_session_is_410(
    client: httpx.AsyncClient, stack: Stack, started: list[tuple[str, dict[str, str]]]
) -> None:
    owner = stack.headers()
    session_id = await echo_session(client, owner, "about to end", started)
    key = (await mint(client, session_id, owner))["key"]
    stopped = await client.delete(f"/api/v1/sessions/{session_id}", headers=owner)
    assert stopped.status_code in (200, 202)

    async def ended() -> bool:
        answer = await client.get(f"/api/v1/sessions/{session_id}", headers=owner)
        return answer.json()["status"] in ("ended", "failed")

    await until(ended, 60, "the session ended")
    for path in (*ALIAS_GETS, "/events"):
        body = assert_problem(await client.get(path, headers=basic(key)), 410)
        assert body["session_status"] == "ended"
    assert_problem(await client.post("/message", json={"content": "late"}, headers=basic(key)), 410)
    assert_problem(
        await client.post(f"/api/v1/sessions/{session_id}/client-keys", json={}, headers=owner), 410
    )


async def test_who_may_mint_a_key(
    client: httpx.AsyncClient, stack: Stack, started: list[tuple[str, dict[str, str]]]
) -> None:
    member_id, member = await add_member(client, stack, "member")
    _, colleague = await add_member(client, stack, "member")
    _, admin = await add_member(client, stack, "admin")
    session_id = await echo_session(client, member, "mine alone", started)
    # Another member sees no such session, as with every session route.
    assert_problem(
        await client.post(f"/api/v1/sessions/{session_id}/client-keys", json={}, headers=colleague), 404
    )
    assert_problem(await client.delete(f"/api/v1/sessions/{session_id}/client-keys", headers=colleague), 404)
    # Another organization's owner neither.
    other_org, other_owner = uuid.uuid4(), uuid.uuid4()
    await seed_async(stack.env["AGENTAPI_MIGRATIONS_DATABASE_URL"], other_org, other_owner, "Other Org")
    assert_problem(
        await client.post(
            f"/api/v1/sessions/{session_id}/client-keys",
            json={},
            headers=stack.headers(org_id=other_org, user_id=other_owner, role="owner"),
        ),
        404,
    )
    # The organization's admin may, and the key acts as the admin.
    key = (await mint(client, session_id, admin))["key"]
    assert (await client.get("/status", headers=basic(key))).status_code == 200
    # A member removed from the organization: their key stops with them.
    own_key = (await mint(client, session_id, member))["key"]
    assert (await client.get("/messages", headers=basic(own_key))).status_code == 200
    removed = await client.delete(
        f"/api/v1/orgs/{stack.org_id}/members/{member_id}", headers=stack.headers(role="owner")
    )
    assert removed.status_code == 204
    assert_problem(await client.get("/messages", headers=basic(own_key)), 403)


def _audit_rows(urls: DbUrls, org_id: uuid.UUID, session_id: str) -> list[tuple[str, str, dict[str, object]]]:
    with psycopg.connect(urls.owner.replace("postgresql+asyncpg://", "postgresql://")) as conn:
        rows = conn.execute(
            "SELECT action, outcome, details FROM audit_logs WHERE org_id = %s AND resource_id = %s ORDER BY seq",
            (org_id, session_id),
        ).fetchall()
    return [(str(action), str(outcome), dict(details)) for action, outcome, details in rows]


async def test_minting_revoking_and_keyed_calls_are_audited(
    client: httpx.AsyncClient, stack: Stack, pg_urls: DbUrls, started: list[tuple[str, dict[str, str]]]
) -> None:
    stack.start_worker("audit")
    owner = stack.headers()
    session_id = await echo_session(client, owner, "on the record", started)
    key = (await mint(client, session_id, owner))["key"]
    assert (await client.post("/message", json={"content": "keyed"}, headers=basic(key))).status_code == 200
    assert (
        await client.delete(f"/api/v1/sessions/{session_id}/client-keys", headers=owner)
    ).status_code == 200

    def wanted(rows: list[tuple[str, str, dict[str, object]]]) -> bool:
        done = {(a.split()[0], a.endswith("/client-keys"), o) for a, o, _ in rows}
        return {("POST", True, "success"), ("DELETE", True, "success")} <= done and any(
            a == "POST /message" and o == "success" for a, o, _ in rows
        )

    async def recorded() -> bool:
        return wanted(await asyncio.to_thread(_audit_rows, pg_urls, stack.org_id, session_id))

    await until(recorded, 60, "the key's actions are on the audit trail")
    rows = await asyncio.to_thread(_audit_rows, pg_urls, stack.org_id, session_id)
    keyed = next(details for action, _, details in rows if action == "POST /message")
    assert keyed["via"] == "session_client_key"
    assert not any(key in json.dumps(details) for _, _, details in rows)
