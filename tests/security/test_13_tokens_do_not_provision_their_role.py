"""Finding 13: a never-seen user whose token said ``role: owner`` was provisioned as an owner.

Provisioning is now the organization's ``auto_provision`` setting (``member`` by default,
``token_role`` or ``off``), and every provisioning is in the audit trail."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg

from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack
from tests.security.helpers import assert_problem


def _dsn(urls: DbUrls) -> str:
    return urls.owner.replace("postgresql+asyncpg://", "postgresql://")


async def _role_of(urls: DbUrls, org_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    def read() -> str | None:
        with psycopg.connect(_dsn(urls)) as conn:
            row = conn.execute(
                "SELECT role FROM memberships WHERE org_id = %s AND user_id = %s", (org_id, user_id)
            ).fetchone()
            return None if row is None else str(row[0])

    return await asyncio.to_thread(read)


async def _provisioned_audit_rows(urls: DbUrls, org_id: uuid.UUID, user_id: uuid.UUID) -> list[str]:
    def read() -> list[str]:
        with psycopg.connect(_dsn(urls)) as conn:
            rows = conn.execute(
                "SELECT details->>'role' FROM audit_logs WHERE org_id = %s AND actor_user_id = %s"
                " AND action = 'membership.provisioned'",
                (org_id, user_id),
            ).fetchall()
            return [str(row[0]) for row in rows]

    # The audit worker may still be starting on a busy machine.
    for _ in range(600):
        found = await asyncio.to_thread(read)
        if found:
            return found
        await asyncio.sleep(0.1)
    return []


async def _set_policy(client: httpx.AsyncClient, stack: Stack, policy: str) -> httpx.Response:
    return await client.put(
        "/api/v1/settings", json={"settings": {"auto_provision": policy}}, headers=stack.headers(role="owner")
    )


async def test_a_token_role_is_not_a_membership_role_unless_the_org_says_so(
    stack: Stack, pg_urls: DbUrls
) -> None:
    stack.start_worker("audit")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        stranger = uuid.uuid4()
        first = await client.get("/api/v1/sessions", headers=stack.headers(user_id=stranger, role="owner"))
        assert first.status_code == 200, first.text
        assert await _role_of(pg_urls, stack.org_id, stranger) == "member"
        assert await _provisioned_audit_rows(pg_urls, stack.org_id, stranger) == ["member"]
        # Acting as an owner needs a membership that says so: the settings are admins' only.
        assert_problem(
            await client.get("/api/v1/settings", headers=stack.headers(user_id=stranger, role="owner")), 403
        )

        assert_problem(await _set_policy(client, stack, "everyone-is-owner"), 422)

        assert (await _set_policy(client, stack, "off")).status_code == 200
        refused = uuid.uuid4()
        assert_problem(await client.get("/api/v1/sessions", headers=stack.headers(user_id=refused)), 403)
        assert await _role_of(pg_urls, stack.org_id, refused) is None

        assert (await _set_policy(client, stack, "token_role")).status_code == 200
        trusted = uuid.uuid4()
        ok = await client.get("/api/v1/sessions", headers=stack.headers(user_id=trusted, role="admin"))
        assert ok.status_code == 200
        assert await _role_of(pg_urls, stack.org_id, trusted) == "admin"
        assert await _provisioned_audit_rows(pg_urls, stack.org_id, trusted) == ["admin"]
