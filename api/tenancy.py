"""From an authenticated principal to a tenant context: membership, provisioning, effective role.

A step after authentication (api.after_auth) looks up the caller's membership of the token's organization
on every request (cached per process for a few seconds):

- none yet, and the organization exists: what happens is the organization's ``auto_provision``
  setting (tenant settings): ``member`` (the default) provisions the user row and a ``member``
  membership, ``token_role`` provisions with the token's role (Supabase-style, for organizations
  whose identity provider decides roles), ``off`` answers 403 until an admin adds the user. A
  token alone never made anyone an owner unless the organization said so; each provisioning is
  audited. The organization does not exist: 403;
- removed (``removed_at`` set): 403, whatever the token says, until an admin adds them again;
- otherwise the effective role is the lesser of the token's role and the membership's, so a
  demotion here takes effect at once and a token alone cannot raise anyone's role.

Platform superadmins act in any organization without a membership.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from uuid import UUID

from litestar.exceptions import PermissionDeniedException
from litestar.types import Scope
from redis.exceptions import RedisError
from sqlmodel import select

from api.auth import Principal
from api.state import Resources
from events.audit import audit_event
from events.publisher import publish
from schemas.db import MemberContext, TenantContext, dialect_insert, tenant_transaction
from schemas.roles import ROLE_RANK
from schemas.tables import Membership, Organization, TenantSettings, User
from services.context import current_correlation_id
from services.recent import Recent
from services.single_flight import SingleFlight
from services.tenant_settings import AUTO_PROVISION_DEFAULT, AUTO_PROVISION_KEY, AUTO_PROVISION_POLICIES

log = logging.getLogger("agentapi.tenancy")

CACHE_SECONDS = 5.0
# (org, user) -> membership role, or None when removed
_recent: Recent[tuple[UUID, UUID], str | None] = Recent(CACHE_SECONDS)
_UNKNOWN = object()
# Concurrent first lookups of one membership (the token's role and email decide a provisioning).
_lookups: SingleFlight[tuple[UUID, UUID, str, str | None], str | None] = SingleFlight()
# Superadmins whose user row this process has made sure of.
_user_rows: set[UUID] = set()


def tenant_context(principal: Principal) -> MemberContext:
    """Tenant endpoints need an organization in the token."""
    if principal.org_id is None:
        raise PermissionDeniedException("the token names no organization (app_metadata.org_id)")
    role = "superadmin" if principal.is_superadmin else principal.role
    return MemberContext(org_id=principal.org_id, user_id=principal.user_id, role=role)


def forget_membership(org_id: UUID, user_id: UUID) -> None:
    """Drop a cached membership after it changed (other processes notice within CACHE_SECONDS)."""
    _recent.forget((org_id, user_id))


async def membership_role(res: Resources, principal: Principal) -> str | None:
    """The membership's role, provisioning it on first sight; None when the member was removed."""
    assert principal.org_id is not None
    key = (principal.org_id, principal.user_id)
    cached = _recent.get(key, _UNKNOWN)
    if cached is not _UNKNOWN:
        return cached  # type: ignore[return-value]  # not the sentinel, so a cached role or None
    return await _lookups.run(
        (*key, principal.role, principal.email), lambda: _load_membership(res, principal)
    )


async def _load_membership(res: Resources, principal: Principal) -> str | None:
    assert principal.org_id is not None
    key = (principal.org_id, principal.user_id)
    ctx = TenantContext(org_id=principal.org_id, user_id=principal.user_id, role="member")
    provisioned: str | None = None
    async with tenant_transaction(res.engine, ctx) as db:
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
            policy = await _auto_provision(db, principal.org_id)
            if policy == "off":
                raise PermissionDeniedException(
                    "you are not a member of this organization; an admin must add you"
                )
            role = principal.role if policy == "token_role" and principal.role in ROLE_RANK else "member"
            await db.exec(
                dialect_insert(db, User)
                .values(id=principal.user_id, email=principal.email)
                .on_conflict_do_nothing(index_elements=["id"])
            )
            await db.exec(
                dialect_insert(db, Membership)
                .values(org_id=principal.org_id, user_id=principal.user_id, role=role)
                .on_conflict_do_nothing(index_elements=["org_id", "user_id"])
            )
            result: str | None = role
            provisioned = role
        else:
            result = None if member[1] is not None else member[0]
    _recent.put(key, result)
    if provisioned is not None:
        await _audit_provisioning(res, principal, provisioned)
    return result


async def _auto_provision(db, org_id: UUID) -> str:
    settings = (await db.exec(select(TenantSettings.settings).where(TenantSettings.org_id == org_id))).first()
    value = (settings or {}).get(AUTO_PROVISION_KEY, AUTO_PROVISION_DEFAULT)
    return value if value in AUTO_PROVISION_POLICIES else AUTO_PROVISION_DEFAULT


async def _audit_provisioning(res: Resources, principal: Principal, role: str) -> None:
    """A membership made by a token is on the organization's record, with the role it got."""
    assert principal.org_id is not None
    event = audit_event(
        org_id=principal.org_id,
        actor_user_id=principal.user_id,
        action="membership.provisioned",
        outcome="success",
        resource_type="members",
        resource_id=str(principal.user_id),
        details={"role": role, "token_role": principal.role},
        correlation_id=current_correlation_id(),
    )
    try:
        await publish(res.redis, res.names, event)
    except (RedisError, OSError) as exc:
        log.error("audit event for a provisioned membership could not be published: %s", exc)


def _lesser(token_role: str, member_role: str) -> str:
    return min(token_role, member_role, key=lambda role: ROLE_RANK.get(role, 0))


async def ensure_user_row(engine, principal: Principal) -> None:
    """Superadmins own rows (sessions, prompts) like anyone, without a membership: their user row."""
    assert principal.org_id is not None
    if principal.user_id in _user_rows:
        return
    ctx = TenantContext(org_id=principal.org_id, user_id=principal.user_id, role="superadmin")
    async with tenant_transaction(engine, ctx) as db:
        await db.exec(
            dialect_insert(db, User)
            .values(id=principal.user_id, email=principal.email)
            .on_conflict_do_nothing(index_elements=["id"])
        )
    _user_rows.add(principal.user_id)


async def check_membership(scope: Scope, principal: Principal) -> None:
    """403 for a removed member; else the principal's role lowered to the membership's (a step of
    api.after_auth)."""
    if principal.is_superadmin:
        if principal.org_id is not None:
            await ensure_user_row(scope["app"].state["resources"].engine, principal)
    elif principal.org_id is not None:
        res = scope["app"].state["resources"]
        role = await membership_role(res, principal)
        if role is None:
            raise PermissionDeniedException("you were removed from this organization")
        effective = _lesser(principal.role, role)
        if effective != principal.role:
            scope["user"] = replace(principal, role=effective)
