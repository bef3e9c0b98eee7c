"""GDPR: export a user's data, and erase it.

Both act within the caller's organization: a user on their own data, or an org admin/owner on a
member's. Erasure stops the user's live sessions, deletes their sessions, messages, prompts, MCP
configurations and tokens in this organization, asks a worker to delete their workspace files,
and, once they belong to no organization, clears what identifies them from the user row. Audit rows stay (the trail is
append-only) and keep only the user's id, which no longer leads to a person.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import inspect
from sqlmodel import col, func, select, update
from sqlmodel import delete as sql_delete

from events.envelope import Event, EventType
from events.publisher import publish
from schemas.db import MemberContext, TenantContext, tenant_transaction
from schemas.roles import ADMIN_ROLES
from schemas.tables import (
    AuditLog,
    McpConfiguration,
    McpOAuthToken,
    Membership,
    SessionMessage,
    SessionWorkspace,
    SystemPrompt,
    User,
    UserSession,
    utcnow,
)
from services.context import Backends, current_correlation_id
from services.errors import Forbidden, NotFound
from services.mcp.changes import announce_change
from services.orgs import keep_an_owner, may_grant
from services.sessions.ending import live_session_ids, stop_sessions

PLATFORM = TenantContext(org_id=None, user_id=None, role="superadmin")
MAX_EXPORTED_AUDIT_ROWS = 10_000


def authorize(ctx: MemberContext, user_id: UUID) -> MemberContext:
    """The user themselves, or an admin of their organization."""
    if user_id != ctx.user_id and ctx.role not in ADMIN_ROLES:
        raise Forbidden("only the user themselves or an organization admin may do this")
    return ctx


async def _membership(backends: Backends, ctx: MemberContext, user_id: UUID) -> Membership:
    async with tenant_transaction(backends.engine, ctx) as db:
        member = (
            await db.exec(
                select(Membership).where(
                    Membership.org_id == ctx.org_id,
                    Membership.user_id == user_id,
                    col(Membership.removed_at).is_(None),
                )
            )
        ).first()
    if member is None:
        raise NotFound("no such user in this organization")
    return member


def _plain(row: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    data = row.model_dump(mode="json")
    return {key: value for key, value in data.items() if key not in drop and not key.startswith("encrypted_")}


async def export_user(backends: Backends, ctx: MemberContext, user_id: UUID) -> dict[str, Any]:
    """Everything this organization holds about the user, as JSON. Secrets are never included."""
    authorize(ctx, user_id)
    member = await _membership(backends, ctx, user_id)
    mine = TenantContext(org_id=ctx.org_id, user_id=ctx.user_id, role=ctx.role)
    async with tenant_transaction(backends.engine, mine) as db:
        user = await db.get(User, user_id)
        sessions = list(
            await db.exec(
                select(UserSession).where(UserSession.org_id == ctx.org_id, UserSession.user_id == user_id)
            )
        )
        messages = list(
            await db.exec(
                select(SessionMessage)
                .where(SessionMessage.org_id == ctx.org_id, SessionMessage.user_id == user_id)
                .order_by(col(SessionMessage.session_id), col(SessionMessage.seq))
            )
        )
        prompts = list(
            await db.exec(
                select(SystemPrompt).where(SystemPrompt.org_id == ctx.org_id, SystemPrompt.user_id == user_id)
            )
        )
        configs = list(
            await db.exec(
                select(McpConfiguration).where(
                    McpConfiguration.org_id == ctx.org_id, McpConfiguration.user_id == user_id
                )
            )
        )
        grants = list(
            await db.exec(
                select(McpOAuthToken).where(
                    McpOAuthToken.org_id == ctx.org_id, McpOAuthToken.user_id == user_id
                )
            )
        )
        audit = list(
            await db.exec(
                select(AuditLog)
                .where(AuditLog.org_id == ctx.org_id, AuditLog.actor_user_id == user_id)
                .order_by(col(AuditLog.seq))
                .limit(MAX_EXPORTED_AUDIT_ROWS)
            )
        )
    by_session: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        by_session.setdefault(str(message.session_id), []).append(_plain(message, ("org_id", "user_id")))
    return {
        "exported_at": datetime.now().astimezone().isoformat(),
        "user": _plain(user) if user else {"id": str(user_id)},
        "membership": _plain(member),
        "sessions": [
            {**_plain(s, ("org_id", "user_id")), "messages": by_session.get(str(s.id), [])} for s in sessions
        ],
        "system_prompts": [_plain(p) for p in prompts],
        "mcp_configurations": [_plain(c, ("env",)) | {"env_keys": sorted(c.env)} for c in configs],
        "mcp_oauth_connections": [_plain(g) for g in grants],
        "audit_events": [_plain(a, ("prev_hash", "hash")) for a in audit],
    }


async def erase_user(backends: Backends, ctx: MemberContext, user_id: UUID) -> None:
    """Erase the user's data in this organization (GDPR). Audit rows are kept, keyed only by id."""
    authorize(ctx, user_id)
    member = await _membership(backends, ctx, user_id)
    if user_id != ctx.user_id:
        # Erasing someone ends their membership: only an owner may end an owner's.
        may_grant(ctx, member.role, None)
    org_id = member.org_id
    async with tenant_transaction(backends.engine, ctx) as db:
        await keep_an_owner(db, org_id, user_id, member.role)
        live = await live_session_ids(db, org_id, user_id)
        # What the tools workers loaded of them must go: the user's own configurations, and the
        # others' loads with the user's grants.
        own = set(
            await db.exec(
                select(McpConfiguration.id).where(
                    McpConfiguration.org_id == org_id, McpConfiguration.user_id == user_id
                )
            )
        )
        granted = set(
            await db.exec(
                select(McpOAuthToken.configuration_id).where(
                    McpOAuthToken.org_id == org_id, McpOAuthToken.user_id == user_id
                )
            )
        )
        for model in (
            McpOAuthToken,
            SessionMessage,
            SessionWorkspace,
            UserSession,
            SystemPrompt,
            McpConfiguration,
        ):
            columns = inspect(model).columns
            await db.exec(sql_delete(model).where(columns.org_id == org_id, columns.user_id == user_id))
        # The membership stays as a tombstone, so the erased user's still-valid token cannot
        # provision them again.
        await db.exec(
            update(Membership)
            .where(col(Membership.org_id) == org_id, col(Membership.user_id) == user_id)
            .values(removed_at=utcnow(), updated_at=utcnow())
        )
    names = backends.names
    for config_id in own:
        await announce_change(
            backends.redis, names, config_id, names.mcp_tools(config_id), names.breaker(config_id)
        )
    for config_id in granted - own:
        await announce_change(backends.redis, names, config_id)
    await stop_sessions(backends, live)
    # Whether the person still belongs anywhere is a platform question: RLS hides other orgs.
    async with tenant_transaction(backends.engine, PLATFORM) as db:
        remaining = (
            await db.exec(
                select(func.count())
                .select_from(Membership)
                .where(Membership.user_id == user_id, col(Membership.removed_at).is_(None))
            )
        ).one()
        if remaining == 0:
            # The row stays for the tombstones' sake; what identifies the person goes.
            await db.exec(
                update(User)
                .where(col(User.id) == user_id)
                .values(email=None, display_name=None, updated_at=utcnow())
            )
    await publish(
        backends.redis,
        backends.names,
        Event(
            type=EventType.USER_ERASED,
            org_id=ctx.org_id,
            user_id=user_id,
            correlation_id=current_correlation_id(),
            payload={"requested_by": str(ctx.user_id), "stopped_sessions": [str(s) for s in live]},
        ),
    )
