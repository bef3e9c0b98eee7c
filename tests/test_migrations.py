"""Migrations on both backends, the schema's CHECK constraints, and the reference SQL in infra/."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from schemas.db import create_engine
from schemas.rls import reference_sql
from schemas.tables import McpConfiguration, Organization, SystemPrompt
from tests.fixtures.postgres import DbUrls

REPO = Path(__file__).resolve().parents[1]


def test_reference_sql_matches_the_migration() -> None:
    assert (REPO / "infra/sql/rls.sql").read_text() == reference_sql()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    urls: DbUrls = request.getfixturevalue("pg_urls")
    return urls.owner


BAD_ROWS = {
    "global prompt with an org": lambda org: SystemPrompt(org_id=org, scope="global", name="g", content="x"),
    "user prompt without a user": lambda org: SystemPrompt(org_id=org, scope="user", name="u", content="x"),
    "unknown transport": lambda org: McpConfiguration(
        org_id=org, scope="organization", name="t", transport="pigeon", endpoint_url="https://x"
    ),
    "unknown auth type": lambda org: McpConfiguration(
        org_id=org,
        scope="organization",
        name="a",
        transport="http",
        auth_type="magic",
        endpoint_url="https://x",
    ),
    "org config owned by a user": lambda org: McpConfiguration(
        org_id=org,
        user_id=uuid.uuid4(),
        scope="organization",
        name="o",
        transport="http",
        endpoint_url="https://x",
    ),
    "stdio without a command": lambda org: McpConfiguration(
        org_id=org, scope="organization", name="s", transport="stdio"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
async def test_check_constraints(db_url: str, case: str) -> None:
    engine = create_engine(db_url)
    org = uuid.uuid4()
    async with AsyncSession(engine) as db, db.begin():
        db.add(Organization(id=org, name="o", slug=org.hex))
    with pytest.raises(IntegrityError):
        async with AsyncSession(engine) as db, db.begin():
            db.add(BAD_ROWS[case](org))
    await engine.dispose()


async def test_names_are_unique_per_scope(db_url: str) -> None:
    engine = create_engine(db_url)
    org_a, org_b = uuid.uuid4(), uuid.uuid4()
    async with AsyncSession(engine) as db, db.begin():
        db.add_all([Organization(id=org, name="o", slug=org.hex) for org in (org_a, org_b)])
        await db.flush()
        db.add(SystemPrompt(org_id=org_a, scope="organization", name="style", content="x"))
        db.add(SystemPrompt(org_id=org_b, scope="organization", name="style", content="x"))
    with pytest.raises(IntegrityError):
        async with AsyncSession(engine) as db, db.begin():
            db.add(SystemPrompt(org_id=org_a, scope="organization", name="style", content="y"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def own_db_url(request: pytest.FixtureRequest) -> str:
    """A database of the test's own: a downgrade must not pull the shared one from under other tests."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    urls: DbUrls = request.getfixturevalue("own_pg_urls")
    return urls.owner


async def test_end_reason_keeps_a_long_reason_and_downgrades(own_db_url: str) -> None:
    """0010: a CLI's error text fits whole; a downgrade cuts it to the old width instead of failing."""
    from sqlmodel import select

    db_url = own_db_url

    from schemas.migrate import downgrade, upgrade
    from schemas.settings import Settings
    from schemas.tables import User, UserSession

    settings = Settings(database_url=db_url, environment="test", jwt_secret="migrations-only")  # type: ignore[call-arg]
    reason = "agent_error: API Error · Retrying in 8 s · " + "x" * 900
    engine = create_engine(db_url)
    slug = f"reasons-{uuid.uuid4().hex[:6]}"
    org = Organization(name=slug, slug=slug)
    user = User(id=uuid.uuid4(), email=f"{uuid.uuid4().hex[:8]}@example.com")
    async with AsyncSession(engine, expire_on_commit=False) as db:
        db.add_all([org, user])
        await db.flush()
        row = UserSession(
            org_id=org.id, user_id=user.id, agent_type="claude", status="failed", end_reason=reason
        )
        db.add(row)
        await db.commit()
        session_id = row.id
    await engine.dispose()

    async def stored() -> str:
        check = create_engine(db_url)
        async with check.connect() as conn:
            value = (
                await conn.execute(select(UserSession.end_reason).where(UserSession.id == session_id))
            ).scalar_one()
        await check.dispose()
        return str(value)

    assert await stored() == reason
    await downgrade(settings, "0009")
    assert await stored() == reason[:64]
    await upgrade(settings)
