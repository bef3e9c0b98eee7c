"""Organizations and their members.

Superadmins create organizations. Within one, owners and admins add members and change roles;
only owners grant or take away the owner role, and an organization always keeps one owner.
An organization id other than the caller's is a 404, never a 403 that confirms it exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import (
    PermissionDeniedException,
)
from litestar.params import Parameter
from pydantic import BaseModel, Field

from api.auth import Principal
from api.pagination import cursor_value, encode_cursor
from api.problems import StrictBody
from api.state import resources
from api.tenancy import forget_membership, tenant_context
from schemas.roles import OrgRole
from services import orgs as service


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


class OrgController(Controller):
    path = "/api/v1/orgs"
    tags = ("organizations",)

    @post("/", status_code=201)
    async def create_org(self, data: OrgIn, request: Request[Principal, str, State], state: State) -> OrgOut:
        """Create an organization (platform superadmins)."""
        if not request.user.is_superadmin:
            raise PermissionDeniedException("only platform superadmins create organizations")
        owner = (data.owner_user_id, data.owner_email) if data.owner_user_id else None
        org = await service.create_org(resources(state), request.user.user_id, data.name, data.slug, owner)
        return OrgOut(**org.model_dump())

    @get("/{org_id:uuid}")
    async def get_org(self, org_id: UUID, request: Request[Principal, str, State], state: State) -> OrgOut:
        org = await service.get_org(resources(state), tenant_context(request.user), org_id)
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
        ctx = service.own_org(tenant_context(request.user), org_id)
        after = cursor_value(cursor, UUID) if cursor else None
        rows = await service.list_members(resources(state), ctx, limit, after)
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
        ctx = service.own_org(tenant_context(request.user), org_id)
        member = await service.add_member(resources(state), ctx, data.user_id, data.role, data.email)
        forget_membership(org_id, data.user_id)
        return MemberOut(user_id=data.user_id, role=data.role, email=data.email, created_at=member.created_at)

    @patch("/{org_id:uuid}/members/{user_id:uuid}")
    async def change_role(
        self, org_id: UUID, user_id: UUID, data: RoleIn, request: Request[Principal, str, State], state: State
    ) -> MemberOut:
        ctx = service.own_org(tenant_context(request.user), org_id)
        member, email = await service.change_role(resources(state), ctx, user_id, data.role)
        forget_membership(org_id, user_id)
        return MemberOut(user_id=user_id, role=data.role, email=email, created_at=member.created_at)

    @delete("/{org_id:uuid}/members/{user_id:uuid}", status_code=204)
    async def remove_member(
        self, org_id: UUID, user_id: UUID, request: Request[Principal, str, State], state: State
    ) -> None:
        """Remove a member; their token stops working here. Their data stays until erased
        (DELETE /api/v1/users/{id})."""
        ctx = service.own_org(tenant_context(request.user), org_id)
        await service.remove_member(resources(state), ctx, user_id)
        forget_membership(org_id, user_id)
