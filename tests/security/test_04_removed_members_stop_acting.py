"""Finding 4: a removed admin's inbound webhook still ran as them (202; the new session owned by
the removed admin), and removing a member left their live sessions running with gateway keys."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg

from schemas.webhook_signing import signed_headers
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack
from tests.security.helpers import add_member, assert_problem
from tests.test_skeleton_e2e import ECHO
from tests.test_webhooks import deliveries_published


def _status(urls: DbUrls, session_id: str) -> str:
    with psycopg.connect(urls.owner.replace("postgresql+asyncpg://", "postgresql://")) as conn:
        return str(
            conn.execute("SELECT status FROM user_sessions WHERE id = %s", (session_id,)).fetchone()[0]
        )  # type: ignore[index]


async def test_a_removed_admins_webhook_no_longer_runs_as_them(stack: Stack) -> None:
    owner = stack.headers(role="owner")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        admin_id, admin = await add_member(client, stack, "admin")
        created = await client.post(
            "/api/v1/webhooks",
            json={
                "name": f"as-admin-{uuid.uuid4().hex[:6]}",
                "direction": "inbound",
                "action": {"type": "start_session", **ECHO, "template": "{body}"},
            },
            headers=admin,
        )
        hook = created.json()
        removed = await client.delete(f"/api/v1/orgs/{stack.org_id}/members/{admin_id}", headers=owner)
        assert removed.status_code == 204
        body = b'{"x": 1}'
        answer = await client.post(
            hook["deliveries_url"], content=body, headers=signed_headers(hook["secret"], "d1", body)
        )
        assert "no longer an admin" in str(assert_problem(answer, 409)["detail"])
        assert deliveries_published(stack, hook["id"]) == 0


async def test_removing_a_member_ends_their_live_sessions(stack: Stack, pg_urls: DbUrls) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        member_id, member = await add_member(client, stack, "member")
        created = await client.post("/api/v1/sessions", json=ECHO, headers=member)
        assert created.status_code in (201, 202), created.text
        session_id = created.json()["id"]
        for _ in range(600):
            if await asyncio.to_thread(_status, pg_urls, session_id) in ("running", "stable"):
                break
            await asyncio.sleep(0.1)
        removed = await client.delete(
            f"/api/v1/orgs/{stack.org_id}/members/{member_id}", headers=stack.headers(role="owner")
        )
        assert removed.status_code == 204
        status = ""
        for _ in range(600):
            status = await asyncio.to_thread(_status, pg_urls, session_id)
            if status in ("ended", "failed"):
                break
            await asyncio.sleep(0.1)
        assert status == "ended"
