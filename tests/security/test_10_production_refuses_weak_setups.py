"""Finding 10: production accepted ``AGENTAPI_JWT_SECRET=x`` and an empty secret, ``serve`` reported
ready when connected as a role Row-Level Security does not hold (the table owner ``postgres``),
FORCE ROW LEVEL SECURITY was off on every tenant table, and the service role could read every
tenant by setting ``app.role=superadmin`` for itself."""

from __future__ import annotations

import secrets
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from schemas.db import (
    PlatformConnectionMissing,
    TenantContext,
    attach_platform,
    create_engine,
    dispose_engine,
    rls_bypass_reason,
    tenant_transaction,
)
from schemas.roles import SUPERADMIN
from schemas.tables import TENANT_TABLES
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import spawn, stop, wait_ready
from tests.security.helpers import production_env


def _exits_with(env: dict[str, str], port: int, log: Path) -> str:
    proc = spawn(["serve", "--port", str(port)], env, log)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail("serve kept running")
    assert proc.returncode != 0
    return log.read_text(errors="replace")


@pytest.mark.parametrize(("secret", "words"), [("x", "at least 32 bytes"), ("", "set but empty")])
def test_production_refuses_a_weak_jwt_secret(
    pg_urls: DbUrls, tmp_path: Path, secret: str, words: str
) -> None:
    env, port = production_env(pg_urls, tmp_path, pg_urls.service, secret)
    assert words in _exits_with(env, port, tmp_path / "serve.log")


def test_production_refuses_a_role_rls_does_not_hold_and_serves_as_the_service_role(
    pg_urls: DbUrls, tmp_path: Path
) -> None:
    env, port = production_env(pg_urls, tmp_path, pg_urls.owner, secrets.token_urlsafe(48))
    assert "refusing to serve: the database role postgres is a superuser" in _exits_with(
        env, port, tmp_path / "owner.log"
    )
    env, port = production_env(pg_urls, tmp_path, pg_urls.service, secrets.token_urlsafe(48))
    proc = spawn(["serve", "--port", str(port)], env, tmp_path / "service.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
    finally:
        stop(proc)


def test_production_refuses_a_platform_url_that_is_not_the_platform_role(
    pg_urls: DbUrls, tmp_path: Path
) -> None:
    env, port = production_env(pg_urls, tmp_path, pg_urls.service, secrets.token_urlsafe(48))
    env["AGENTAPI_PLATFORM_DATABASE_URL"] = pg_urls.service
    assert "connects as agentapi_app, not as the platform role agentapi_platform" in _exits_with(
        env, port, tmp_path / "platform.log"
    )
    del env["AGENTAPI_PLATFORM_DATABASE_URL"]
    assert "AGENTAPI_PLATFORM_DATABASE_URL is not set" in _exits_with(env, port, tmp_path / "none.log")


async def test_the_service_role_cannot_make_itself_superadmin(pg_urls: DbUrls) -> None:
    """Finding 10: ``app.role=superadmin`` set on the service connection (as an injected statement
    would) reads no other organization; the same on the platform role's connection does, and that
    connection without it reads as the tenant it names."""
    ours, theirs = uuid.uuid4(), uuid.uuid4()
    owner = create_engine(pg_urls.owner, pool_size=1)
    async with owner.begin() as conn:
        for org_id in (ours, theirs):
            await conn.execute(
                text(
                    "INSERT INTO organizations (id, name, slug, created_at, updated_at)"
                    " VALUES (:id, :n, :n, now(), now())"
                ),
                {"id": org_id, "n": f"org-{org_id.hex[:12]}"},
            )
    await owner.dispose()
    query = text("SELECT id FROM organizations WHERE id IN (:a, :b)")
    ids = {"a": ours, "b": theirs}
    service = create_engine(pg_urls.service, pool_size=1)
    async with service.begin() as conn:
        await conn.execute(text("SELECT set_config('app.role', 'superadmin', false)"))
        assert (await conn.execute(query, ids)).all() == [], "a variable grants the service role nothing"
    with pytest.raises(PlatformConnectionMissing):
        async with tenant_transaction(service, TenantContext(org_id=None, user_id=None, role=SUPERADMIN)):
            pass
    platform = create_engine(pg_urls.platform, pool_size=1)
    attach_platform(service, platform)
    try:
        async with tenant_transaction(
            service, TenantContext(org_id=None, user_id=None, role=SUPERADMIN)
        ) as db:
            assert len((await db.execute(query, ids)).all()) == 2, "the platform connection crosses orgs"
        async with tenant_transaction(platform, TenantContext(org_id=ours, user_id=None, role="admin")) as db:
            assert [row.id for row in (await db.execute(query, ids)).all()] == [ours]
        assert await rls_bypass_reason(service, "agentapi_platform") is None
    finally:
        await dispose_engine(service)


def test_every_tenant_table_forces_row_level_security(pg_urls: DbUrls) -> None:
    with psycopg.connect(pg_urls.owner.replace("postgresql+asyncpg://", "postgresql://")) as conn:
        rows = conn.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE relkind = 'r' AND relname = ANY(%s)",
            (list(TENANT_TABLES),),
        ).fetchall()
    assert sorted(name for name, _, _ in rows) == sorted(TENANT_TABLES)
    assert [name for name, enabled, forced in rows if not (enabled and forced)] == []
