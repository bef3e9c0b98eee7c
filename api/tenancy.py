"""From an authenticated principal to a tenant context: membership, provisioning, effective role.

A middleware after authentication looks up the caller's membership of the token's organization
on every request (cached per process for a few seconds):

- none yet, and the organization exists: the user row and membership are provisioned with the
  token's role (the first request of a valid user); the organization does not exist: 403;
- removed (``removed_at`` set): 403, whatever the token says, until an admin adds them again;
- otherwise the effective role is the lesser of the token's role and the membership's, so a
  demotion here takes effect at once and a token alone cannot raise anyone's role.

Platform superadmins act in any organization without a membership.
"""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

from litestar.exceptions import PermissionDeniedException
from litestar.types import ASGIApp, Receive, Scope, Send
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import select

from api.auth import Principal
from api.recent import Recent
from api.single_flight import SingleFlight
from schemas.db import TenantContext, tenant_transaction
from schemas.tables import Membership, Organization, User

ROLE_RANK = {"member": 0, "admin": 1, "owner": 2}
CACHE_SECONDS = 5.0
# (org, user) -> membership role, or None when removed
_recent: Recent[tuple[UUID, UUID], str | None] = Recent(CACHE_SECONDS)
_UNKNOWN = object()
# Concurrent first lookups of one membership (the token's role and email decide a provisioning).
_lookups: SingleFlight[tuple[UUID, UUID, str, str | None], str | None] = SingleFlight()
# Superadmins whose user row this process has made sure of.
_user_rows: set[UUID] = set()


def tenant_context(principal: Principal) -> TenantContext:
    """Tenant endpoints need an organization in the token."""
    if principal.org_id is None:
        raise PermissionDeniedException("the token names no organization (app_metadata.org_id)")
    role = "superadmin" if principal.is_superadmin else principal.role
    return TenantContext(org_id=principal.org_id, user_id=principal.user_id, role=role)


def forget_membership(org_id: UUID, user_id: UUID) -> None:
    """Drop a cached membership after it changed (other processes notice within CACHE_SECONDS)."""
    _recent.forget((org_id, user_id))


async def membership_role(engine, principal: Principal) -> str | None:  # type: ignore[no-untyped-def]
    """The membership's role, provisioning it on first sight; None when the member was removed."""
    assert principal.org_id is not None
    key = (principal.org_id, principal.user_id)
    cached = _recent.get(key, _UNKNOWN)
    if cached is not _UNKNOWN:
        return cached  # type: ignore[return-value]
    return await _lookups.run(
        (*key, principal.role, principal.email), lambda: _load_membership(engine, principal)
    )


async def _load_membership(engine, principal: Principal) -> str | None:  # type: ignore[no-untyped-def]
    assert principal.org_id is not None
    key = (principal.org_id, principal.user_id)
    ctx = TenantContext(org_id=principal.org_id, user_id=principal.user_id, role="member")
    async with tenant_transaction(engine, ctx) as db:
        member = (
            await db.exec(
                select(Membership.role, Membership.removed_at).where(
                    Membership.org_id == principal.org_id, Membership.user_id == principal.user_id
                )
            )
        ).first()
        if member is None:
            org = (await db.exec(select(Organization.id).where(Organization.id == principal.org_id))).first()
            if org is None:
                raise PermissionDeniedException("the token's organization does not exist on this platform")
            role = principal.role if principal.role in ROLE_RANK else "member"
            insert = pg_insert if db.bind.dialect.name == "postgresql" else sqlite_insert
            await db.exec(
                insert(User)
                .values(id=principal.user_id, email=principal.email)
                .on_conflict_do_nothing(index_elements=["id"])
            )
            await db.exec(
                insert(Membership)
                .values(org_id=principal.org_id, user_id=principal.user_id, role=role)
                .on_conflict_do_nothing(index_elements=["org_id", "user_id"])
            )
            result: str | None = role
        else:
            result = None if member[1] is not None else member[0]
    _recent.put(key, result)
    return result


def _lesser(token_role: str, member_role: str) -> str:
    return min(token_role, member_role, key=lambda role: ROLE_RANK.get(role, 0))


async def ensure_user_row(engine, principal: Principal) -> None:  # type: ignore[no-untyped-def]
    """Superadmins own rows (sessions, prompts) like anyone, without a membership: their user row."""
    assert principal.org_id is not None
    if principal.user_id in _user_rows:
        return
    ctx = TenantContext(org_id=principal.org_id, user_id=principal.user_id, role="superadmin")
    async with tenant_transaction(engine, ctx) as db:
        insert = pg_insert if db.bind.dialect.name == "postgresql" else sqlite_insert
        await db.exec(
            insert(User)
            .values(id=principal.user_id, email=principal.email)
            .on_conflict_do_nothing(index_elements=["id"])
        )
    _user_rows.add(principal.user_id)


def membership_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("user")
        if scope["type"] == "http" and isinstance(principal, Principal) and principal.is_superadmin:
            if principal.org_id is not None:
                await ensure_user_row(scope["app"].state["resources"].engine, principal)
        elif scope["type"] == "http" and isinstance(principal, Principal) and principal.org_id is not None:
            engine = scope["app"].state["resources"].engine
            role = await membership_role(engine, principal)
            if role is None:
                raise PermissionDeniedException("you were removed from this organization")
            effective = _lesser(principal.role, role)
            if effective != principal.role:
                scope["user"] = replace(principal, role=effective)
        await app(scope, receive, send)

    return middleware
