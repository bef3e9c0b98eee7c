"""Organizations and their members.

Superadmins create organizations. Within one, owners and admins add members and change roles;
only owners grant or take away the owner role, and an organization always keeps one owner.
An organization id other than the caller's is a 404, never a 403 that confirms it exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID, uuid4

from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import (
    ClientException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.params import Parameter
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import Principal
from api.org_rules import keep_an_owner, may_grant, owners_left
from api.pagination import cursor_value, encode_cursor
from api.problems import StrictBody
from api.state import Resources, resources
from api.tenancy import forget_membership, tenant_context
from schemas.db import TenantContext, dialect_insert, tenant_transaction
from schemas.roles import OrgRole
from schemas.tables import Membership, Organization, User, utcnow
from services.sessions.ending import live_session_ids, stop_sessions


class OrgIn(StrictBody):
    name: str = Field(min_length=1, max_length=200)
    slug: str = Field(min_length=2, max_length=100, pattern=r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
    owner_user_id: UUID | None = Field(None, description="made the organization's first owner")
    owner_email: str | None = Field(None, max_length=320)


class OrgOut(BaseModel):
    id: UUID
    name: str
    slug: str
    created_at: datetime


class MemberIn(StrictBody):
    user_id: UUID
    role: OrgRole = "member"
    email: str | None = Field(None, max_length=320)


class RoleIn(StrictBody):
    role: OrgRole


class MemberOut(BaseModel):
    user_id: UUID
    role: str
    email: str | None
    created_at: datetime


class MemberPage(BaseModel):
    members: list[MemberOut]
    next_cursor: str | None


async def _upsert_user(db: AsyncSession, user_id: UUID, email: str | None) -> None:
    await db.exec(
        dialect_insert(db, User).values(id=user_id, email=email).on_conflict_do_nothing(index_elements=["id"])
    )


def _own_org(principal: Principal, org_id: UUID) -> TenantContext:
    ctx = tenant_context(principal)
    if org_id != ctx.org_id:
        raise NotFoundException("no such organization")
    return ctx


async def _member(res: Resources, ctx: TenantContext, user_id: UUID) -> tuple[Membership, str | None]:
    async with tenant_transaction(res.engine, ctx) as db:
        row = (
            await db.exec(
                select(Membership, User.email)
                .join(User, col(User.id) == col(Membership.user_id), isouter=True)
                .where(
                    Membership.org_id == ctx.org_id,
                    Membership.user_id == user_id,
                    col(Membership.removed_at).is_(None),
                )
            )
        ).first()
    if row is None:
        raise NotFoundException("no such member")
    return row[0], row[1]


class OrgController(Controller):
    path = "/api/v1/orgs"
    tags = ("organizations",)

    @post("/", status_code=201)
    async def create_org(self, data: OrgIn, request: Request[Principal, str, State], state: State) -> OrgOut:
        """Create an organization (platform superadmins)."""
        if not request.user.is_superadmin:
            raise PermissionDeniedException("only platform superadmins create organizations")
        res = resources(state)
        org = Organization(id=uuid4(), name=data.name, slug=data.slug)
        platform = TenantContext(org_id=org.id, user_id=request.user.user_id, role="superadmin")
        try:
            async with tenant_transaction(res.engine, platform) as db:
                db.add(org)
                await db.flush()
                if data.owner_user_id:
                    await _upsert_user(db, data.owner_user_id, data.owner_email)
                    db.add(Membership(org_id=org.id, user_id=data.owner_user_id, role="owner"))
        except IntegrityError as exc:
            raise ClientException(f"an organization with slug {data.slug!r} exists", status_code=409) from exc
        return OrgOut(**org.model_dump())

    @get("/{org_id:uuid}")
    async def get_org(self, org_id: UUID, request: Request[Principal, str, State], state: State) -> OrgOut:
        res = resources(state)
        ctx = _own_org(request.user, org_id)
        async with tenant_transaction(res.engine, ctx) as db:
            org = await db.get(Organization, org_id)
        if org is None:
            raise NotFoundException("no such organization")
        return OrgOut(**org.model_dump())

    @get("/{org_id:uuid}/members")
    async def list_members(
        self,
        org_id: UUID,
        request: Request[Principal, str, State],
        state: State,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 100,
        cursor: Annotated[str | None, Parameter(max_length=100)] = None,
    ) -> MemberPage:
        res = resources(state)
        ctx = _own_org(request.user, org_id)
        query = (
            select(Membership, User.email)
            .join(User, col(User.id) == col(Membership.user_id), isouter=True)
            .where(Membership.org_id == org_id, col(Membership.removed_at).is_(None))
        )
        if cursor:
            query = query.where(col(Membership.user_id) > cursor_value(cursor, UUID))
        async with tenant_transaction(res.engine, ctx) as db:
            rows = list(await db.exec(query.order_by(col(Membership.user_id)).limit(limit + 1)))
        page = rows[:limit]
        return MemberPage(
            members=[
                MemberOut(user_id=m.user_id, role=m.role, email=email, created_at=m.created_at)
                for m, email in page
            ],
            next_cursor=encode_cursor(page[-1][0].user_id) if len(rows) > limit else None,
        )

    @post("/{org_id:uuid}/members", status_code=201)
    async def add_member(
        self, org_id: UUID, data: MemberIn, request: Request[Principal, str, State], state: State
    ) -> MemberOut:
        """Add a user to the organization (admins; owners for the owner role)."""
        res = resources(state)
        ctx = _own_org(request.user, org_id)
        may_grant(ctx, None, data.role)
        # The user row is global: created here under the platform context when the person is new.
        platform = TenantContext(org_id=org_id, user_id=ctx.user_id, role="superadmin")
        async with tenant_transaction(res.engine, platform) as db:
            await _upsert_user(db, data.user_id, data.email)
        async with tenant_transaction(res.engine, ctx) as db:
            member = (
                await db.exec(
                    select(Membership).where(Membership.org_id == org_id, Membership.user_id == data.user_id)
                )
            ).first()
            if member is not None and member.removed_at is None:
                raise ClientException("the user is already a member", status_code=409)
            if member is None:
                member = Membership(org_id=org_id, user_id=data.user_id, role=data.role)
            else:  # someone removed before comes back
                member.role, member.removed_at, member.updated_at = data.role, None, utcnow()
            db.add(member)
        forget_membership(org_id, data.user_id)
        return MemberOut(user_id=data.user_id, role=data.role, email=data.email, created_at=member.created_at)

    @patch("/{org_id:uuid}/members/{user_id:uuid}")
    async def change_role(
        self, org_id: UUID, user_id: UUID, data: RoleIn, request: Request[Principal, str, State], state: State
    ) -> MemberOut:
        res = resources(state)
        ctx = _own_org(request.user, org_id)
        member, email = await _member(res, ctx, user_id)
        may_grant(ctx, member.role, data.role)
        async with tenant_transaction(res.engine, ctx) as db:
            if (
                member.role == "owner"
                and data.role != "owner"
                and await owners_left(db, org_id, user_id) == 0
            ):
                raise ClientException("the organization must keep an owner", status_code=409)
            member.role, member.updated_at = data.role, utcnow()
            await db.merge(member)
        forget_membership(org_id, user_id)
        return MemberOut(user_id=user_id, role=data.role, email=email, created_at=member.created_at)

    @delete("/{org_id:uuid}/members/{user_id:uuid}", status_code=204)
    async def remove_member(
        self, org_id: UUID, user_id: UUID, request: Request[Principal, str, State], state: State
    ) -> None:
        """Remove a member; their token stops working here. Their data stays until erased
        (DELETE /api/v1/users/{id})."""
        res = resources(state)
        ctx = _own_org(request.user, org_id)
        member, _ = await _member(res, ctx, user_id)
        may_grant(ctx, member.role, None)
        async with tenant_transaction(res.engine, ctx) as db:
            await keep_an_owner(db, org_id, user_id, member.role)
            # A tombstone, not a deletion: the member's still-valid token must not provision them again.
            member.removed_at = member.updated_at = utcnow()
            await db.merge(member)
            live = await live_session_ids(db, org_id, user_id)
        forget_membership(org_id, user_id)
        await stop_sessions(res, live)
