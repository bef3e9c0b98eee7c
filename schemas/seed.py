"""Create an organization with an owner: used by ``agentapi dev`` and by tests (as the DB owner)."""

from __future__ import annotations

from uuid import UUID

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from schemas.db import create_engine
from schemas.settings import Settings
from schemas.tables import Membership, Organization, User


async def seed_tenant(settings: Settings, *, org_id: UUID, org_name: str, user_id: UUID, email: str) -> None:
    """Idempotent: an existing org, user or membership is left as it is."""
    engine = create_engine(settings.owner_database_url)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as db, db.begin():
            if await db.get(Organization, org_id) is None:
                db.add(
                    Organization(
                        id=org_id,
                        name=org_name,
                        slug=f"{org_name.lower().replace(' ', '-')}-{org_id.hex[:8]}",
                    )
                )
            if await db.get(User, user_id) is None:
                db.add(User(id=user_id, email=email))
            await db.flush()
            existing = await db.exec(
                select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
            )
            if existing.first() is None:
                db.add(Membership(org_id=org_id, user_id=user_id, role="owner"))
    finally:
        await engine.dispose()
