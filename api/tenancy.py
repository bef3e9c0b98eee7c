"""From an authenticated principal to a tenant context, and the first-request provisioning."""

from __future__ import annotations

from uuid import UUID

from litestar.exceptions import PermissionDeniedException
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import Principal
from schemas.db import TenantContext
from schemas.tables import Membership, Organization, User


def tenant_context(principal: Principal) -> TenantContext:
    """Tenant endpoints need an organization in the token."""
    if principal.org_id is None:
        raise PermissionDeniedException("the token names no organization (app_metadata.org_id)")
    role = "superadmin" if principal.is_superadmin else principal.role
    return TenantContext(org_id=principal.org_id, user_id=principal.user_id, role=role)


# (user, org) pairs already provisioned by this process: provisioning is one query per pair per process.
_provisioned: set[tuple[UUID, UUID]] = set()


async def ensure_member(db: AsyncSession, principal: Principal) -> None:
    """Create the user row and membership on a valid user's first request, where the org exists."""
    assert principal.org_id is not None
    key = (principal.user_id, principal.org_id)
    if key in _provisioned:
        return
    member = await db.exec(
        select(Membership.id).where(
            Membership.org_id == principal.org_id, Membership.user_id == principal.user_id
        )
    )
    if member.first() is None:
        org = await db.exec(select(Organization.id).where(Organization.id == principal.org_id))
        if org.first() is None:
            raise PermissionDeniedException("the token's organization does not exist on this platform")
        insert = pg_insert if db.bind.dialect.name == "postgresql" else sqlite_insert
        await db.exec(
            insert(User)
            .values(id=principal.user_id, email=principal.email)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        await db.exec(
            insert(Membership)
            .values(org_id=principal.org_id, user_id=principal.user_id, role=_member_role(principal))
            .on_conflict_do_nothing(index_elements=["org_id", "user_id"])
        )
    _provisioned.add(key)


def _member_role(principal: Principal) -> str:
    return principal.role if principal.role in ("member", "admin", "owner") else "member"
