"""GDPR export and erasure, and the retention job, on the running system."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
import redis.asyncio

from events.streams import Names
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import REPO, Stack, seed_async
from tests.test_skeleton_e2e import ECHO, agent_said, read_events
from tests.waiting import until

pytestmark = pytest.mark.timeout(180)
STACK_ENV = {"AGENTAPI_MAX_SESSIONS_PER_USER": "10"}


def owner_dsn(urls: DbUrls) -> str:
    return urls.owner.replace("postgresql+asyncpg://", "postgresql://")


def count(urls: DbUrls, sql: str, *params: object) -> int:
    with psycopg.connect(owner_dsn(urls)) as conn:
        return int(conn.execute(sql, params).fetchone()[0])  # type: ignore[index]


async def add_member(stack: Stack, urls: DbUrls, role: str = "member") -> tuple[uuid.UUID, dict[str, str]]:
    """A second user of the stack's org, provisioned by their first request."""
    user_id = uuid.uuid4()
    headers = stack.headers(user_id=user_id, role=role)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        assert (await client.get("/api/v1/sessions", headers=headers)).status_code == 200
    with psycopg.connect(owner_dsn(urls), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, email, is_superadmin, created_at, updated_at) VALUES (%s, %s, false, now(), now())"
            " ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email",
            (user_id, f"{user_id}@people.example"),
        )
    return user_id, headers


@pytest.fixture(scope="module")
def gdpr_stack(stack: Stack) -> Stack:
    stack.start_worker("default", "audit")
    return stack


async def test_export_then_erase_a_member(gdpr_stack: Stack, pg_urls: DbUrls) -> None:
    stack = gdpr_stack
    member_id, member = await add_member(stack, pg_urls)
    admin = stack.headers(role="admin")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        session = (
            await client.post("/api/v1/sessions", json={**ECHO, "prompt": "remember me"}, headers=member)
        ).json()
        await read_events(client, session["events_url"], member, until=agent_said("echo: remember me"))
        config = await client.post(
            "/api/v1/mcp/configurations",
            json={
                "name": "mine",
                "transport": "http",
                "endpoint_url": "https://93.184.216.34/mcp",
                "auth_type": "bearer",
                "bearer_token": "member-secret-token",
            },
            headers=member,
        )
        assert config.status_code == 201
        workspace = Path(stack.env["AGENTAPI_WORKSPACE_ROOT"]) / str(stack.org_id) / str(member_id)
        assert workspace.exists()

        # Another member may neither export nor erase; another org's admin cannot even see them.
        other_member = stack.headers(user_id=uuid.uuid4())
        assert (
            await client.get(f"/api/v1/users/{member_id}/export", headers=other_member)
        ).status_code == 403
        other_org, other_admin = uuid.uuid4(), uuid.uuid4()
        await seed_async(pg_urls.owner, other_org, other_admin, "Elsewhere")
        stranger = stack.headers(org_id=other_org, user_id=other_admin, role="owner")
        assert (await client.get(f"/api/v1/users/{member_id}/export", headers=stranger)).status_code == 404
        assert (await client.delete(f"/api/v1/users/{member_id}", headers=stranger)).status_code == 404

        exported = await client.get(f"/api/v1/users/{member_id}/export", headers=member)
        assert exported.status_code == 200
        data = exported.json()
        assert data["user"]["email"] == f"{member_id}@people.example"
        contents = [m["content"] for s in data["sessions"] for m in s["messages"]]
        assert "echo: remember me" in contents
        assert [c["name"] for c in data["mcp_configurations"]] == ["mine"]
        assert "member-secret-token" not in exported.text and "encrypted_secret" not in exported.text

        audit_before = count(pg_urls, "SELECT count(*) FROM audit_logs WHERE actor_user_id = %s", member_id)
        # The tools workers hear that the member's configuration is gone (they keep loads up to 60 s).
        store = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
        changes = store.pubsub()
        await changes.subscribe(Names(stack.env["AGENTAPI_REDIS_PREFIX"]).mcp_config_changes())
        assert (await client.delete(f"/api/v1/users/{member_id}", headers=admin)).status_code == 204
        heard: list[str] = []

        async def announced() -> bool:
            message = await changes.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                heard.append(message["data"])
            return config.json()["id"] in heard

        await until(announced, timeout=10, what="the erased configuration announced")
        await changes.aclose()
        await store.aclose()
        assert (await client.get(f"/api/v1/users/{member_id}/export", headers=admin)).status_code == 404
        ended = await client.get(f"/api/v1/sessions/{session['id']}", headers=admin)
        assert ended.status_code == 404

    for table in ("user_sessions", "session_messages", "mcp_configurations"):
        assert count(pg_urls, f"SELECT count(*) FROM {table} WHERE user_id = %s", member_id) == 0, table
    # What stays: a membership tombstone (so the member's token cannot bring them back) and a user
    # row without anything that identifies the person.
    assert (
        count(
            pg_urls,
            "SELECT count(*) FROM memberships WHERE user_id = %s AND removed_at IS NOT NULL",
            member_id,
        )
        == 1
    )
    assert count(pg_urls, "SELECT count(*) FROM users WHERE id = %s AND email IS NULL", member_id) == 1
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        comeback = await client.get("/api/v1/sessions", headers=member)
        assert comeback.status_code == 403 and "removed" in comeback.json()["detail"]
    # The trail stays, keyed by an id that now leads nowhere.
    assert (
        count(pg_urls, "SELECT count(*) FROM audit_logs WHERE actor_user_id = %s", member_id) >= audit_before
    )
    for _ in range(60):
        if not workspace.exists():
            break
        await asyncio.sleep(0.5)
    assert not workspace.exists()


async def test_retention_deletes_only_expired_finished_sessions(gdpr_stack: Stack, pg_urls: DbUrls) -> None:
    stack = gdpr_stack
    old, recent, live = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with psycopg.connect(owner_dsn(pg_urls), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenant_settings (id, org_id, settings, retention_days, created_at, updated_at)"
            " VALUES (%s, %s, '{}', 30, now(), now()) ON CONFLICT (org_id) DO UPDATE SET retention_days = 30",
            (uuid.uuid4(), stack.org_id),
        )
        for session_id, status, ended_at in [
            (old, "ended", long_ago),
            (recent, "ended", datetime.now(UTC)),
            (live, "running", None),
        ]:
            conn.execute(
                "INSERT INTO user_sessions (id, org_id, user_id, agent_type, status, metadata, created_at, updated_at, ended_at)"
                " VALUES (%s, %s, %s, 'custom', %s, '{}', %s, %s, %s)",
                (session_id, stack.org_id, stack.user_id, status, long_ago, long_ago, ended_at),
            )
            conn.execute(
                "INSERT INTO session_messages (id, session_id, org_id, user_id, seq, role, content, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, 0, 'agent', 'old words', now(), now())",
                (uuid.uuid4(), session_id, stack.org_id, stack.user_id),
            )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "retention", "run"],
        env={**os.environ, **stack.env},
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert f"org {stack.org_id}: 1 expired sessions deleted" in result.stdout
    remaining = {
        session_id
        for session_id in (old, recent, live)
        if count(pg_urls, "SELECT count(*) FROM user_sessions WHERE id = %s", session_id) == 1
    }
    assert remaining == {recent, live}
    assert count(pg_urls, "SELECT count(*) FROM session_messages WHERE session_id = %s", old) == 0
