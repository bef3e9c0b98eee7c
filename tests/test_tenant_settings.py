"""Tenant settings: admins only, secrets sealed and write-only, per organization."""

from __future__ import annotations

import uuid

import httpx
import psycopg

from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, seed_async


async def test_settings_and_sealed_secrets(stack: Stack, pg_urls: DbUrls) -> None:
    admin, member = stack.headers(role="admin"), stack.headers(user_id=uuid.uuid4())
    secret = f"vertex-key-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        assert (await client.get("/api/v1/settings", headers=member)).status_code == 403
        empty = (await client.get("/api/v1/settings", headers=admin)).json()
        assert empty["settings"] == {} and empty["secret_names"] == []
        body = {
            "settings": {"default_agent": "claude"},
            "secrets": {"vertex_api_key": secret},
            "retention_days": 30,
        }
        written = await client.put("/api/v1/settings", json=body, headers=admin)
        assert written.status_code == 200 and secret not in written.text
        assert written.json()["secret_names"] == ["vertex_api_key"]
        read = (await client.get("/api/v1/settings", headers=admin)).json()
        assert read["settings"] == {"default_agent": "claude"} and read["retention_days"] == 30
        assert secret not in str(read)
        # Secrets merge: adding one keeps the other; null deletes.
        await client.put("/api/v1/settings", json={"secrets": {"other": "x"}}, headers=admin)
        assert (await client.get("/api/v1/settings", headers=admin)).json()["secret_names"] == [
            "other",
            "vertex_api_key",
        ]
        await client.put("/api/v1/settings", json={"secrets": {"other": None}}, headers=admin)
        assert (await client.get("/api/v1/settings", headers=admin)).json()["secret_names"] == [
            "vertex_api_key"
        ]
        bad = await client.put("/api/v1/settings", json={"secrets": {"1bad name": "x"}}, headers=admin)
        assert bad.status_code == 422
        huge = await client.put("/api/v1/settings", json={"settings": {"blob": "x" * 70_000}}, headers=admin)
        assert huge.status_code == 422

        other_org, other_owner = uuid.uuid4(), uuid.uuid4()
        await seed_async(pg_urls.owner, other_org, other_owner, "Settings Elsewhere")
        theirs = (
            await client.get(
                "/api/v1/settings", headers=stack.headers(org_id=other_org, user_id=other_owner, role="owner")
            )
        ).json()
        assert theirs["secret_names"] == [] and theirs["settings"] == {}
    with psycopg.connect(pg_urls.owner.replace("postgresql+asyncpg://", "postgresql://")) as conn:
        stored = conn.execute(
            "SELECT encrypted_secrets FROM tenant_settings WHERE org_id = %s", (stack.org_id,)
        ).fetchone()
    assert stored and stored[0].startswith("v1.") and secret not in stored[0]
