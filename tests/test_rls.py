"""Row-Level Security on real PostgreSQL, checked with raw SQL as the service role."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from schemas.db import TenantContext, create_engine, tenant_transaction
from schemas.tables import (
    AuditLog,
    McpConfiguration,
    McpOAuthToken,
    Membership,
    Organization,
    SessionMessage,
    SessionWorkspace,
    SystemPrompt,
    TenantSettings,
    User,
    UserSession,
    Webhook,
)
from tests.fixtures.postgres import DbUrls

TENANT_TABLES = [
    "organizations",
    "users",
    "memberships",
    "user_sessions",
    "session_messages",
    "session_workspaces",
    "mcp_configurations",
    "mcp_oauth_tokens",
    "system_prompts",
    "tenant_settings",
    "webhooks",
    "audit_logs",
]


def tenant_rows(org_id: uuid.UUID, user_id: uuid.UUID) -> list[object]:
    session_id, config_id = uuid.uuid4(), uuid.uuid4()
    return [
        Organization(id=org_id, name=f"org {org_id}", slug=str(org_id)),
        User(id=user_id, email=f"{user_id}@example.com"),
        Membership(org_id=org_id, user_id=user_id, role="owner"),
        UserSession(id=session_id, org_id=org_id, user_id=user_id, agent_type="claude"),
        SessionMessage(
            session_id=session_id, org_id=org_id, user_id=user_id, seq=0, role="agent", content="hi"
        ),
        SessionWorkspace(session_id=session_id, org_id=org_id, user_id=user_id, path="/w"),
        McpConfiguration(
            id=config_id,
            org_id=org_id,
            scope="organization",
            name="org-tools",
            transport="http",
            endpoint_url="https://mcp.example.com/mcp",
        ),
        McpConfiguration(
            org_id=org_id, user_id=user_id, scope="user", name="mine", transport="stdio", command="mcp-server"
        ),
        McpOAuthToken(
            org_id=org_id, user_id=user_id, configuration_id=config_id, encrypted_access_token="ct"
        ),
        SystemPrompt(org_id=org_id, scope="organization", name="org", content="be kind"),
        SystemPrompt(org_id=org_id, user_id=user_id, scope="user", name="me", content="be brief"),
        TenantSettings(org_id=org_id),
        Webhook(org_id=org_id, name="ci", direction="inbound", encrypted_secret="ct"),
        AuditLog(
            org_id=org_id, seq=1, event_id=uuid.uuid4().hex, action="test", outcome="success", hash="0" * 64
        ),
    ]


@pytest.fixture(scope="module")
async def tenants(pg_urls: DbUrls) -> AsyncIterator[dict[str, uuid.UUID]]:
    ids = {"org_a": uuid.uuid4(), "user_a": uuid.uuid4(), "org_b": uuid.uuid4(), "user_b": uuid.uuid4()}
    owner = create_engine(pg_urls.owner)
    async with AsyncSession(owner) as db, db.begin():
        for org, user in (("org_a", "user_a"), ("org_b", "user_b")):
            rows = tenant_rows(ids[org], ids[user])
            db.add_all(rows[:2])
            await db.flush()
            db.add_all(rows[2:4])
            await db.flush()
            db.add_all(rows[4:])
        db.add(SystemPrompt(scope="global", name=f"global-{uuid.uuid4().hex[:6]}", content="be safe"))
    await owner.dispose()
    yield ids


@pytest.fixture(scope="module")
async def service(pg_urls: DbUrls) -> AsyncIterator[object]:
    engine = create_engine(pg_urls.service)
    yield engine
    await engine.dispose()


def _owner_of(table: str, row: dict[str, object]) -> object:
    return row["id"] if table in ("organizations", "users") else row["org_id"]


@pytest.mark.parametrize("role", ["member", "admin", "owner"])
async def test_org_context_sees_no_other_org_rows(service, tenants, role: str) -> None:  # type: ignore[no-untyped-def]
    ctx = TenantContext(org_id=tenants["org_a"], user_id=tenants["user_a"], role=role)
    foreign = {tenants["org_b"], tenants["user_b"]}
    async with tenant_transaction(service, ctx) as db:
        for table in TENANT_TABLES:
            rows = [dict(r) for r in (await db.execute(text(f"SELECT * FROM {table}"))).mappings()]
            assert rows, f"{table}: org A sees its own rows"
            assert not [r for r in rows if _owner_of(table, r) in foreign], f"{table} leaks org B rows"
            assert not [r for r in rows if r.get("user_id") == tenants["user_b"]], (
                f"{table} leaks org B's user"
            )


async def test_no_context_sees_nothing(service) -> None:  # type: ignore[no-untyped-def]
    async with service.connect() as conn:
        for table in TENANT_TABLES:
            count = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            assert count == 0, f"{table} visible without tenant context"


async def test_context_does_not_outlive_its_transaction(service, tenants) -> None:  # type: ignore[no-untyped-def]
    ctx = TenantContext(org_id=tenants["org_a"], user_id=tenants["user_a"], role="owner")
    async with tenant_transaction(service, ctx) as db:
        assert (await db.execute(text("SELECT count(*) FROM organizations"))).scalar_one() == 1
    async with service.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM organizations"))).scalar_one() == 0


async def test_service_role_cannot_bypass_rls(service) -> None:  # type: ignore[no-untyped-def]
    async with service.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            )
        ).one()
    assert tuple(row) == (False, False)


async def test_writing_into_another_org_is_refused(service, tenants) -> None:  # type: ignore[no-untyped-def]
    ctx = TenantContext(org_id=tenants["org_a"], user_id=tenants["user_a"], role="owner")
    with pytest.raises(DBAPIError, match="row-level security"):
        async with tenant_transaction(service, ctx) as db:
            db.add(Webhook(org_id=tenants["org_b"], name="sneaky", direction="inbound", encrypted_secret="x"))


async def test_members_see_only_their_own_sessions(service, tenants, pg_urls: DbUrls) -> None:  # type: ignore[no-untyped-def]
    colleague = uuid.uuid4()
    owner = create_engine(pg_urls.owner)
    async with AsyncSession(owner) as db, db.begin():
        db.add(User(id=colleague))
        await db.flush()
        db.add(Membership(org_id=tenants["org_a"], user_id=colleague, role="member"))
        db.add(UserSession(org_id=tenants["org_a"], user_id=colleague, agent_type="codex"))
    await owner.dispose()
    member = TenantContext(org_id=tenants["org_a"], user_id=tenants["user_a"], role="member")
    admin = TenantContext(org_id=tenants["org_a"], user_id=tenants["user_a"], role="admin")
    query = text("SELECT user_id FROM user_sessions")
    async with tenant_transaction(service, member) as db:
        assert {r[0] for r in await db.execute(query)} == {tenants["user_a"]}
    async with tenant_transaction(service, admin) as db:
        assert {r[0] for r in await db.execute(query)} == {tenants["user_a"], colleague}


async def test_audit_rows_cannot_be_rewritten_by_the_service(service, tenants) -> None:  # type: ignore[no-untyped-def]
    ctx = TenantContext(org_id=tenants["org_a"], user_id=tenants["user_a"], role="owner")
    for statement in ("UPDATE audit_logs SET action = 'x'", "DELETE FROM audit_logs"):
        with pytest.raises(DBAPIError, match="permission denied"):
            async with tenant_transaction(service, ctx) as db:
                await db.execute(text(statement))
