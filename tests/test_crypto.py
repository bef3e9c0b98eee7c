"""Secrets at rest: AES-256-GCM bound to the row, key ring rotation on real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import text

from schemas.crypto import DecryptionError, KeyRing, KeyRingError, SecretRef
from schemas.db import TenantContext, create_engine, dispose_engine, tenant_transaction
from schemas.tables import McpConfiguration, Membership, Organization, User, Webhook
from services.key_rotation import PLATFORM, rotate_all
from tests.fixtures.postgres import DbUrls, service_engine
from tests.fixtures.stack import REPO


def ring(*ids: str) -> tuple[KeyRing, str]:
    spec = ",".join(f"{key_id}:{KeyRing.generate_key()}" for key_id in ids)
    return KeyRing.parse(spec), spec


def ref(org: uuid.UUID | None = None, row: uuid.UUID | None = None) -> SecretRef:
    return SecretRef("webhooks", "encrypted_secret", row or uuid.uuid4(), org or uuid.uuid4())


def test_round_trip_and_ciphertext_shape() -> None:
    keys, _ = ring("k2", "k1")
    where = ref()
    sealed = keys.encrypt("whsec_abc", where)
    assert sealed.startswith("v1.k2.")
    assert "whsec_abc" not in sealed
    assert keys.decrypt(sealed, where) == "whsec_abc"
    assert keys.encrypt("whsec_abc", where) != sealed  # fresh nonce each time


@pytest.mark.parametrize("change", ["row", "org", "column", "table"])
def test_a_ciphertext_moved_elsewhere_does_not_open(change: str) -> None:
    keys, _ = ring("k1")
    where = ref()
    sealed = keys.encrypt("secret", where)
    moved = {
        "row": SecretRef(where.table, where.column, uuid.uuid4(), where.org_id),
        "org": SecretRef(where.table, where.column, where.row_id, uuid.uuid4()),
        "column": SecretRef(where.table, "other", where.row_id, where.org_id),
        "table": SecretRef("mcp_configurations", where.column, where.row_id, where.org_id),
    }[change]
    with pytest.raises(DecryptionError, match="copied from another row or tenant"):
        keys.decrypt(sealed, moved)


def test_tampering_and_unknown_keys_are_clear_errors() -> None:
    keys, _ = ring("k1")
    where = ref()
    sealed = keys.encrypt("secret", where)
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(DecryptionError):
        keys.decrypt(flipped, where)
    other, _ = ring("k9")
    with pytest.raises(DecryptionError, match="key 'k1', which is not in the key ring"):
        other.decrypt(sealed, where)
    with pytest.raises(DecryptionError, match="not a ciphertext"):
        keys.decrypt("plaintext-token", where)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("nokey", "key_id:base64key"),
        ("k1:" + "A" * 10, "32 bytes"),
        (f"k1:{KeyRing.generate_key()},k1:{KeyRing.generate_key()}", "twice"),
        (f"bad id:{KeyRing.generate_key()}", "letters"),
    ],
)
def test_malformed_key_rings_are_refused(spec: str, message: str) -> None:
    with pytest.raises(KeyRingError, match=message):
        KeyRing.parse(spec)


def test_a_bad_key_ring_stops_start_up_with_one_line() -> None:
    env = {
        "PATH": os.environ["PATH"],
        "AGENTAPI_ENVIRONMENT": "test",
        "AGENTAPI_JWT_SECRET": "x" * 32,
        "AGENTAPI_ENCRYPTION_KEYS": "k1:c2hvcnQ=",
    }
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "migrate"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("agentapi: invalid setting AGENTAPI_ENCRYPTION_KEYS:")
    assert "32 bytes" in result.stderr and "Traceback" not in result.stderr


async def _seed(urls: DbUrls, keys: KeyRing) -> dict[str, uuid.UUID]:
    """Two orgs, each with a webhook and an MCP configuration holding sealed secrets."""
    engine = service_engine(urls)
    ids: dict[str, uuid.UUID] = {}
    try:
        for name in ("a", "b"):
            org, user = uuid.uuid4(), uuid.uuid4()
            hook, config = uuid.uuid4(), uuid.uuid4()
            ids |= {f"org_{name}": org, f"hook_{name}": hook, f"config_{name}": config}
            async with tenant_transaction(engine, TenantContext(None, None, "superadmin")) as db:
                db.add(Organization(id=org, name=name, slug=f"{name}-{org}"))
                db.add(User(id=user, email=f"{user}@example.com"))
                await db.flush()
                db.add(Membership(org_id=org, user_id=user, role="owner"))
                db.add(
                    Webhook(
                        id=hook,
                        org_id=org,
                        name="hook",
                        direction="inbound",
                        encrypted_secret=keys.encrypt(
                            f"hook-secret-{name}", SecretRef("webhooks", "encrypted_secret", hook, org)
                        ),
                    )
                )
                db.add(
                    McpConfiguration(
                        id=config,
                        org_id=org,
                        scope="organization",
                        name="tools",
                        transport="http",
                        auth_type="bearer",
                        endpoint_url="https://mcp.example.com/mcp",
                        encrypted_secret=keys.encrypt(
                            f"bearer-{name}", SecretRef("mcp_configurations", "encrypted_secret", config, org)
                        ),
                    )
                )
    finally:
        await dispose_engine(engine)
    return ids


async def _secret(urls: DbUrls, keys: KeyRing, table: str, row: uuid.UUID, org: uuid.UUID) -> str:
    engine = service_engine(urls)
    try:
        async with tenant_transaction(engine, PLATFORM) as db:
            sealed = (
                await db.execute(text(f"SELECT encrypted_secret FROM {table} WHERE id = :id"), {"id": row})
            ).scalar_one()
        return keys.decrypt(sealed, SecretRef(table, "encrypted_secret", row, org))
    finally:
        await dispose_engine(engine)


async def test_ciphertext_copied_to_another_tenants_row_fails(pg_urls: DbUrls) -> None:
    keys, _ = ring("k1")
    ids = await _seed(pg_urls, keys)
    engine = create_engine(pg_urls.owner)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE webhooks SET encrypted_secret = (SELECT encrypted_secret FROM webhooks WHERE id = :a)"
                    " WHERE id = :b"
                ),
                {"a": ids["hook_a"], "b": ids["hook_b"]},
            )
    finally:
        await engine.dispose()
    assert await _secret(pg_urls, keys, "webhooks", ids["hook_a"], ids["org_a"]) == "hook-secret-a"
    with pytest.raises(DecryptionError, match=f"row {ids['hook_b']}"):
        await _secret(pg_urls, keys, "webhooks", ids["hook_b"], ids["org_b"])


async def test_rotation_names_secrets_it_cannot_open_and_rotates_the_rest(own_pg_urls: DbUrls) -> None:
    old, old_spec = ring("old")
    ids = await _seed(own_pg_urls, old)
    engine = create_engine(own_pg_urls.owner)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE webhooks SET encrypted_secret = 'v1.old.AAAAAAAAAAAAAAAAAAAAAAAA' WHERE id = :b"
                ),
                {"b": ids["hook_b"]},
            )
    finally:
        await engine.dispose()
    both = KeyRing.parse(f"new:{KeyRing.generate_key()},{old_spec}")
    engine = service_engine(own_pg_urls)
    try:
        report = await rotate_all(engine, both, batch_size=1)
    finally:
        await dispose_engine(engine)
    assert len(report.failed) == 1 and str(ids["hook_b"]) in report.failed[0]
    assert report.total == 3 and report.remaining == 1
    assert await _secret(own_pg_urls, both, "webhooks", ids["hook_a"], ids["org_a"]) == "hook-secret-a"


async def test_rotation_re_encrypts_everything_then_the_old_key_can_go(own_pg_urls: DbUrls) -> None:
    pg_urls = own_pg_urls
    old, old_spec = ring("old")
    ids = await _seed(pg_urls, old)
    new_key = f"new:{KeyRing.generate_key()}"
    both = KeyRing.parse(f"{new_key},{old_spec}")

    env = {
        "PATH": os.environ["PATH"],
        "AGENTAPI_ENVIRONMENT": "test",
        "AGENTAPI_JWT_SECRET": "x" * 32,
        "AGENTAPI_DATABASE_URL": pg_urls.service,
        "AGENTAPI_PLATFORM_DATABASE_URL": pg_urls.platform,
        "AGENTAPI_ENCRYPTION_KEYS": f"{new_key},{old_spec}",
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "keys", "rotate"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "every secret is sealed under key 'new'" in result.stdout

    engine = service_engine(pg_urls)
    try:
        again = await rotate_all(engine, both)
    finally:
        await dispose_engine(engine)
    assert again.total == 0 and again.remaining == 0

    new_only = KeyRing.parse(new_key)
    for name in ("a", "b"):
        org = ids[f"org_{name}"]
        assert await _secret(pg_urls, new_only, "webhooks", ids[f"hook_{name}"], org) == f"hook-secret-{name}"
        assert (
            await _secret(pg_urls, new_only, "mcp_configurations", ids[f"config_{name}"], org)
            == f"bearer-{name}"
        )
