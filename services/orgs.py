"""Organizations and their members: who may change whose membership, and the rule that an
organization always keeps an owner.

Shared by member management and GDPR erasure: erasing a member ends their membership as surely as
removing them, so it must obey the same rules (an admin erasing the only owner left the
organization with none, and the admin then could not add one).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from schemas.db import MemberContext, TenantContext, dialect_insert, tenant_transaction
from schemas.roles import ADMIN_ROLES, SUPERADMIN
from schemas.tables import Membership, Organization, User, utcnow
from services.context import Backends
from services.errors import Conflict, Forbidden, NotFound
from services.sessions.ending import live_session_ids, stop_sessions


def may_grant(ctx: TenantContext, current: str | None, wanted: str | None) -> None:
    """Admins manage members; only owners (and superadmins) grant or take away the owner role."""
    if ctx.role not in ADMIN_ROLES:
        raise Forbidden("only organization admins manage members")
    if "owner" in (current, wanted) and ctx.role not in ("owner", "superadmin"):
        raise Forbidden("only owners grant or remove the owner role")


async def owners_left(db: AsyncSession, org_id: UUID, without: UUID) -> int:
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


async def keep_an_owner(db: AsyncSession, org_id: UUID, user_id: UUID, role: str) -> None:
    """Conflict when ``user_id`` (with ``role``) is the organization's last owner and is about to go."""
    if role == "owner" and await owners_left(db, org_id, user_id) == 0:
        raise Conflict("the organization must keep an owner")


def own_org(ctx: MemberContext, org_id: UUID) -> MemberContext:
    """An organization other than the caller's is not found, never forbidden (which would confirm
    that it exists)."""
    if org_id != ctx.org_id:
        raise NotFound("no such organization")
    return ctx


async def _upsert_user(db: AsyncSession, user_id: UUID, email: str | None) -> None:
    await db.exec(
        dialect_insert(db, User).values(id=user_id, email=email).on_conflict_do_nothing(index_elements=["id"])
    )


async def create_org(
    backends: Backends,
    actor: UUID,
    name: str,
    slug: str,
    owner: tuple[UUID, str | None] | None,
) -> Organization:
    """A new organization (``actor`` is a platform superadmin), with ``owner`` (user id, email) as
    its first owner."""
    org = Organization(id=uuid4(), name=name, slug=slug)
    platform = TenantContext(org_id=org.id, user_id=actor, role=SUPERADMIN)
    try:
        async with tenant_transaction(backends.engine, platform) as db:
            db.add(org)
            await db.flush()
            if owner is not None:
                await _upsert_user(db, *owner)
                db.add(Membership(org_id=org.id, user_id=owner[0], role="owner"))
    except IntegrityError as exc:
        raise Conflict(f"an organization with slug {slug!r} exists") from exc
    return org


async def get_org(backends: Backends, ctx: MemberContext, org_id: UUID) -> Organization:
    own_org(ctx, org_id)
    async with tenant_transaction(backends.engine, ctx) as db:
        org = await db.get(Organization, org_id)
    if org is None:
        raise NotFound("no such organization")
    return org


def _members() -> Any:
    return select(Membership, User.email).join(User, col(User.id) == col(Membership.user_id), isouter=True)


async def list_members(
    backends: Backends, ctx: MemberContext, limit: int, after: UUID | None
) -> list[tuple[Membership, str | None]]:
    """Current members with their email, by user id after ``after``: up to ``limit + 1``, so the
    caller tells whether another page follows."""
    query = _members().where(Membership.org_id == ctx.org_id, col(Membership.removed_at).is_(None))
    if after is not None:
        query = query.where(col(Membership.user_id) > after)
    async with tenant_transaction(backends.engine, ctx) as db:
        return list(await db.exec(query.order_by(col(Membership.user_id)).limit(limit + 1)))


async def find_member(backends: Backends, ctx: MemberContext, user_id: UUID) -> tuple[Membership, str | None]:
    async with tenant_transaction(backends.engine, ctx) as db:
        row = (
            await db.exec(
                _members().where(
                    Membership.org_id == ctx.org_id,
                    Membership.user_id == user_id,
                    col(Membership.removed_at).is_(None),
                )
            )
        ).first()
    if row is None:
        raise NotFound("no such member")
    return row[0], row[1]


async def add_member(
    backends: Backends, ctx: MemberContext, user_id: UUID, role: str, email: str | None
) -> Membership:
    """Admins add members (owners for the owner role); someone removed before comes back."""
    may_grant(ctx, None, role)
    # The user row is global: created here under the platform context when the person is new.
    platform = TenantContext(org_id=ctx.org_id, user_id=ctx.user_id, role=SUPERADMIN)
    async with tenant_transaction(backends.engine, platform) as db:
        await _upsert_user(db, user_id, email)
    async with tenant_transaction(backends.engine, ctx) as db:
        member = (
            await db.exec(
                select(Membership).where(Membership.org_id == ctx.org_id, Membership.user_id == user_id)
            )
        ).first()
        if member is not None and member.removed_at is None:
            raise Conflict("the user is already a member")
        if member is None:
            member = Membership(org_id=ctx.org_id, user_id=user_id, role=role)
        else:
            member.role, member.removed_at, member.updated_at = role, None, utcnow()
        db.add(member)
    return member


async def change_role(
    backends: Backends, ctx: MemberContext, user_id: UUID, role: str
) -> tuple[Membership, str | None]:
    member, email = await find_member(backends, ctx, user_id)
    may_grant(ctx, member.role, role)
    async with tenant_transaction(backends.engine, ctx) as db:
        if role != "owner":
            await keep_an_owner(db, ctx.org_id, user_id, member.role)
        member.role, member.updated_at = role, utcnow()
        await db.merge(member)
    return member, email


async def remove_member(backends: Backends, ctx: MemberContext, user_id: UUID) -> None:
    """Ends a membership; the member's live sessions here stop. Their data stays until erased."""
    member, _ = await find_member(backends, ctx, user_id)
    may_grant(ctx, member.role, None)
    async with tenant_transaction(backends.engine, ctx) as db:
        await keep_an_owner(db, ctx.org_id, user_id, member.role)
        # A tombstone, not a deletion: the member's still-valid token must not provision them again.
        member.removed_at = member.updated_at = utcnow()
        await db.merge(member)
        live = await live_session_ids(db, ctx.org_id, user_id)
    await stop_sessions(backends, live)
