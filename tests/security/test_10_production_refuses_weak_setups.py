"""Finding 10: production accepted ``AGENTAPI_JWT_SECRET=x`` and an empty secret, ``serve`` reported
ready when connected as a role Row-Level Security does not hold (the table owner ``postgres``), and
FORCE ROW LEVEL SECURITY was off on every tenant table."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import psycopg
import pytest

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


def test_every_tenant_table_forces_row_level_security(pg_urls: DbUrls) -> None:
    with psycopg.connect(pg_urls.owner.replace("postgresql+asyncpg://", "postgresql://")) as conn:
        rows = conn.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE relkind = 'r' AND relname = ANY(%s)",
            (list(TENANT_TABLES),),
        ).fetchall()
    assert sorted(name for name, _, _ in rows) == sorted(TENANT_TABLES)
    assert [name for name, enabled, forced in rows if not (enabled and forced)] == []
