"""Settings: the seed's plain names work, and bad settings stop start-up with one line each."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from schemas.settings import Settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_seed_plain_names_are_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("AGENTAPI_") and k != "AGENTAPI_ENVIRONMENT"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.internal:5432/agentapi")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("SUPABASE_JWT_SECRET", "s" * 40)
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.co/")
    monkeypatch.setenv("MAX_CONCURRENT_SESSIONS", "7")
    monkeypatch.setenv("SESSION_TIMEOUT", "900")
    monkeypatch.setenv("WORKSPACE_ROOT", "/data/ws")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.database_url == "postgresql+asyncpg://app@db.internal:5432/agentapi"
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.jwt_secret is not None and settings.jwt_secret.get_secret_value() == "s" * 40
    assert settings.effective_jwks_url == "https://project.supabase.co/auth/v1/.well-known/jwks.json"
    assert (settings.max_sessions_per_user, settings.session_timeout, str(settings.workspace_root)) == (
        7,
        900,
        "/data/ws",
    )


def test_bad_settings_stop_start_up_with_one_line_each() -> None:
    env = {
        "PATH": os.environ["PATH"],
        "AGENTAPI_ENVIRONMENT": "production",
        "AGENTAPI_DB_POOL_SIZE": "lots",
        "AGENTAPI_LOG_LEVEL": "chatty",
    }
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "migrate"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert any(line.startswith("agentapi: invalid setting AGENTAPI_DB_POOL_SIZE:") for line in lines)
    assert any(line.startswith("agentapi: invalid setting AGENTAPI_LOG_LEVEL:") for line in lines)
    assert "Traceback" not in result.stderr


def test_production_needs_a_verifier_and_postgres() -> None:
    env = {"PATH": os.environ["PATH"], "AGENTAPI_ENVIRONMENT": "production"}
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "migrate"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PostgreSQL in production" in result.stderr or "JWT_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("threshold", "expected"), [("12345", "12345 True"), ("0", "700 False")])
def test_gc_tuning_follows_its_setting(threshold: str, expected: str) -> None:
    # In a process of its own: the test process's collector stays as it was.
    probe = (
        "import gc; from schemas.settings import Settings; from services.gc_tuning import tune_gc; "
        "tune_gc(Settings(environment='test', jwt_secret='s' * 40)); "
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)"
    )
    env = {**os.environ, "AGENTAPI_GC_GEN0_THRESHOLD": threshold}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_a_workspace_store_needs_a_known_scheme_and_the_key_ring() -> None:
    base = {"PATH": os.environ["PATH"], "AGENTAPI_ENVIRONMENT": "test", "AGENTAPI_JWT_SECRET": "x" * 32}
    for store, expected in [
        (
            "ftp://bucket/prefix",
            "invalid setting AGENTAPI_WORKSPACE_STORE_URL: must be a URL with one of the schemes s3, gs, file",
        ),
        ("s3://bucket/prefix", "AGENTAPI_WORKSPACE_STORE_URL needs AGENTAPI_ENCRYPTION_KEYS"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "api.cli", "migrate"],
            env={**base, "AGENTAPI_WORKSPACE_STORE_URL": store},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
