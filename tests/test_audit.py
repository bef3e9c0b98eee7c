"""The audit trail on the running system: every mutating request recorded, hash-chained,
append-only, and nothing lost while PostgreSQL refuses writes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import httpx
import psycopg
import pytest
import redis.asyncio

from events.streams import DISPATCH_GROUP, Names, WorkKind
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import REPO, Stack
from tests.waiting import until

pytestmark = pytest.mark.timeout(240)


def owner_dsn(urls: DbUrls) -> str:
    return urls.owner.replace("postgresql+asyncpg://", "postgresql://")


def service_dsn(urls: DbUrls) -> str:
    return urls.service.replace("postgresql+asyncpg://", "postgresql://")


def audit_count(urls: DbUrls, org_id: uuid.UUID) -> int:
    with psycopg.connect(owner_dsn(urls)) as conn:
        return int(conn.execute("SELECT count(*) FROM audit_logs WHERE org_id = %s", (org_id,)).fetchone()[0])  # type: ignore[index]


async def wait_for_count(urls: DbUrls, org_id: uuid.UUID, expected: int, timeout: float = 90.0) -> int:
    count = -1
    for _ in range(int(timeout * 4)):
        count = await asyncio.to_thread(audit_count, urls, org_id)
        if count >= expected:
            break
        await asyncio.sleep(0.25)
    return count


async def audit_writer_progress(stack: Stack) -> tuple[int, int]:
    """(audit events not read yet, read but not stored): the writer acknowledges an entry once its
    row is written."""
    client = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    try:
        groups = await client.xinfo_groups(Names(stack.env["AGENTAPI_REDIS_PREFIX"]).work(WorkKind.AUDIT))
    finally:
        await client.aclose()
    group = next((g for g in groups if g["name"] == DISPATCH_GROUP), None)
    return (-1, -1) if group is None else (int(group["lag"]), int(group["pending"]))


async def audit_writer_tried(stack: Stack) -> bool:
    return (await audit_writer_progress(stack))[1] > 0


async def audit_writer_done(stack: Stack) -> bool:
    return await audit_writer_progress(stack) == (0, 0)


def verify(stack: Stack, org_id: uuid.UUID) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", "verify", "--org", str(org_id)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def audit_stack(stack: Stack) -> Stack:
    stack.start_worker("audit")
    return stack


async def bad_creates(client: httpx.AsyncClient, stack: Stack, count: int) -> None:
    """Mutating requests the API refuses (422): audited as failures, no other effect."""
    headers = {**stack.headers(), "User-Agent": "audit-test/1.0"}
    for start in range(0, count, 50):
        responses = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/mcp/configurations",
                    json={"name": "x", "transport": "carrier-pigeon"},
                    headers=headers,
                )
                for _ in range(start, min(start + 50, count))
            )
        )
        assert {r.status_code for r in responses} == {422}


async def test_mutating_requests_are_recorded_and_chained(audit_stack: Stack, pg_urls: DbUrls) -> None:
    before = await asyncio.to_thread(audit_count, pg_urls, audit_stack.org_id)
    async with httpx.AsyncClient(base_url=audit_stack.base_url, timeout=30) as client:
        await bad_creates(client, audit_stack, 3)
        forbidden = await client.post(
            "/api/v1/mcp/configurations",
            json={
                "name": "org-wide",
                "scope": "organization",
                "transport": "http",
                "endpoint_url": "https://93.184.216.34/mcp",
            },
            headers={**audit_stack.headers(), "X-Correlation-ID": "audit-corr-1"},
        )
        assert forbidden.status_code == 403
    assert await wait_for_count(pg_urls, audit_stack.org_id, before + 4) == before + 4
    with psycopg.connect(owner_dsn(pg_urls)) as conn:
        row = conn.execute(
            "SELECT action, outcome, actor_user_id, ip, resource_type, details FROM audit_logs"
            " WHERE org_id = %s AND correlation_id = 'audit-corr-1'",
            (audit_stack.org_id,),
        ).fetchone()
    assert row is not None
    action, outcome, actor, ip, resource_type, details = row
    assert (action, outcome, actor, ip) == (
        "POST /api/v1/mcp/configurations",
        "denied",
        audit_stack.user_id,
        "127.0.0.1",
    )
    assert resource_type == "mcp" and details["status"] == 403
    result = verify(audit_stack, audit_stack.org_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every chain intact" in result.stdout

    # Admins query the trail with filters and a cursor; members may not.
    async with httpx.AsyncClient(base_url=audit_stack.base_url, timeout=30) as client:
        admin = audit_stack.headers(role="admin")
        assert (await client.get("/api/v1/audit", headers=audit_stack.headers())).status_code == 403
        denied = (await client.get("/api/v1/audit?outcome=denied&action=POST", headers=admin)).json()
        assert [e["correlation_id"] for e in denied["entries"]] == ["audit-corr-1"]
        first = (await client.get("/api/v1/audit?limit=2&outcome=failure", headers=admin)).json()
        second = (
            await client.get(
                f"/api/v1/audit?limit=2&outcome=failure&cursor={first['next_cursor']}", headers=admin
            )
        ).json()
        seqs = [e["seq"] for e in first["entries"] + second["entries"]]
        assert len(seqs) == 3 and seqs == sorted(seqs, reverse=True)
        bad_cursor = await client.get("/api/v1/audit?cursor=%%%", headers=admin)
        assert bad_cursor.status_code == 400


async def test_a_raw_message_is_recorded_once_with_its_own_request(
    audit_stack: Stack, pg_urls: DbUrls
) -> None:
    """A raw message's record goes to Redis with the message itself (api.audit_trail.along), not
    from the edge: still one row per request, with that request's correlation id and user agent;
    a refused one is recorded by the edge as before."""
    async with httpx.AsyncClient(base_url=audit_stack.base_url, timeout=30) as client:
        headers = audit_stack.headers()
        created = await client.post(
            "/api/v1/sessions", json={"agent_type": "custom", "custom_agent": "echo"}, headers=headers
        )
        assert created.status_code == 202, created.text
        url = f"/api/v1/sessions/{created.json()['id']}/message"
        before = await asyncio.to_thread(audit_count, pg_urls, audit_stack.org_id)
        sent = await asyncio.gather(
            *(
                client.post(
                    url,
                    json={"content": content, "type": "raw"},
                    headers={**headers, "X-Correlation-ID": f"raw-{n}", "User-Agent": f"raw-test/{n}"},
                )
                for n, content in enumerate(["a", "b", "c", ""])
            )
        )
        assert [r.status_code for r in sent] == [200, 200, 200, 422]
        await client.delete(f"/api/v1/sessions/{created.json()['id']}", headers=headers)
    assert await wait_for_count(pg_urls, audit_stack.org_id, before + 5) >= before + 5
    with psycopg.connect(owner_dsn(pg_urls)) as conn:
        rows = conn.execute(
            "SELECT correlation_id, action, outcome, user_agent, details FROM audit_logs"
            " WHERE org_id = %s AND correlation_id LIKE 'raw-%%' ORDER BY correlation_id",
            (audit_stack.org_id,),
        ).fetchall()
    assert [(r[0], r[2], r[3], r[4]["status"]) for r in rows] == [
        ("raw-0", "success", "raw-test/0", 200),
        ("raw-1", "success", "raw-test/1", 200),
        ("raw-2", "success", "raw-test/2", 200),
        ("raw-3", "failure", "raw-test/3", 422),
    ]
    assert {r[1] for r in rows} == {"POST /api/v1/sessions/{session_id}/message"}
    # The session's own lifecycle records arrive later: let them in before the next test counts.
    settled, last = 0, -1
    while settled < 6:
        await asyncio.sleep(0.5)
        count = await asyncio.to_thread(audit_count, pg_urls, audit_stack.org_id)
        settled, last = (settled + 1 if count == last and await audit_writer_done(audit_stack) else 0), count


async def test_the_service_role_cannot_rewrite_and_verify_names_a_tampered_row(
    audit_stack: Stack, pg_urls: DbUrls
) -> None:
    async with httpx.AsyncClient(base_url=audit_stack.base_url, timeout=30) as client:
        before = await asyncio.to_thread(audit_count, pg_urls, audit_stack.org_id)
        await bad_creates(client, audit_stack, 3)
    assert await wait_for_count(pg_urls, audit_stack.org_id, before + 3) == before + 3

    with psycopg.connect(service_dsn(pg_urls), autocommit=True) as service:
        service.execute("SELECT set_config('app.role', 'superadmin', false)")
        for statement in ("UPDATE audit_logs SET action = 'nothing happened'", "DELETE FROM audit_logs"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                service.execute(statement)
    with psycopg.connect(owner_dsn(pg_urls), autocommit=True) as owner:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            owner.execute("DELETE FROM audit_logs WHERE org_id = %s", (audit_stack.org_id,))
        target = owner.execute(
            "SELECT id FROM audit_logs WHERE org_id = %s ORDER BY seq OFFSET 1 LIMIT 1", (audit_stack.org_id,)
        ).fetchone()[0]  # type: ignore[index]
        # Tampering takes the owner switching the trigger off on purpose.
        owner.execute("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_no_change")
        try:
            owner.execute("UPDATE audit_logs SET outcome = 'success' WHERE id = %s", (target,))
        finally:
            owner.execute("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_no_change")
    result = verify(audit_stack, audit_stack.org_id)
    assert result.returncode == 1
    assert str(target) in result.stdout and "content does not match its hash" in result.stdout


@pytest.fixture
def fresh_org_stack(audit_stack: Stack, pg_urls: DbUrls) -> Stack:
    """The same running stack, acting for a new organization whose chain is untouched."""
    from tests.fixtures.stack import seed

    org_id, user_id = uuid.uuid4(), uuid.uuid4()
    seed(pg_urls.owner, org_id, user_id, "Outage Org")
    audit_stack.org_id, audit_stack.user_id = org_id, user_id
    return audit_stack


async def test_nothing_is_lost_or_doubled_while_postgres_refuses_audit_writes(
    fresh_org_stack: Stack, pg_urls: DbUrls
) -> None:
    stack = fresh_org_stack
    with psycopg.connect(owner_dsn(pg_urls), autocommit=True) as owner:
        # The writer stores through the platform role (cross-organization work).
        owner.execute("REVOKE INSERT ON audit_logs FROM agentapi_app, agentapi_platform")
        try:
            async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
                await bad_creates(client, stack, 1000)
            await until(lambda: audit_writer_tried(stack), 60, "the writer tried to store them")
            assert await asyncio.to_thread(audit_count, pg_urls, stack.org_id) == 0
        finally:
            owner.execute("GRANT INSERT ON audit_logs TO agentapi_app, agentapi_platform")
    assert await wait_for_count(pg_urls, stack.org_id, 1000) == 1000
    await until(lambda: audit_writer_done(stack), 60, "the writer stored them all")
    assert await asyncio.to_thread(audit_count, pg_urls, stack.org_id) == 1000
    result = verify(stack, stack.org_id)
    assert result.returncode == 0, result.stdout
    assert "1000 audit rows verified" in result.stdout
