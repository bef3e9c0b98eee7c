"""Who may change whose membership, and the rule that an organization always keeps an owner.

Shared by member management and GDPR erasure: erasing a member ends their membership as surely as
removing them, so it must obey the same rules (an admin erasing the only owner left the
organization with none, and the admin then could not add one).
"""

from __future__ import annotations

from uuid import UUID

from litestar.exceptions import ClientException, PermissionDeniedException
from sqlmodel import col, func, select

from schemas.db import TenantContext
from schemas.roles import ADMIN_ROLES
from schemas.tables import Membership


def may_grant(ctx: TenantContext, current: str | None, wanted: str | None) -> None:
    """Admins manage members; only owners (and superadmins) grant or take away the owner role."""
    if ctx.role not in ADMIN_ROLES:
        raise PermissionDeniedException("only organization admins manage members")
    if "owner" in (current, wanted) and ctx.role not in ("owner", "superadmin"):
        raise PermissionDeniedException("only owners grant or remove the owner role")


async def owners_left(db, org_id: UUID, without: UUID) -> int:
    return int(
        (
            await db.exec(
                select(func.count())
                .select_from(Membership)
                .where(
                    Membership.org_id == org_id,
                    Membership.role == "owner",
                    Membership.user_id != without,
                    col(Membership.removed_at).is_(None),
                )
            )
        ).one()
    )


async def keep_an_owner(db, org_id: UUID, user_id: UUID, role: str) -> None:
    """409 when ``user_id`` (with ``role``) is the organization's last owner and is about to go."""
    if role == "owner" and await owners_left(db, org_id, user_id) == 0:
        raise ClientException("the organization must keep an owner", status_code=409)
