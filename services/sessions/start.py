"""Starting a session: the quota, the composed prompt, the row, then the request on the bus."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError
from sqlmodel import col, func, select

from events.envelope import Event, EventType
from events.payloads import SessionRequest
from events.publisher import publish
from schemas.db import MemberContext, TenantContext, tenant_transaction
from schemas.tables import TenantSettings, UserSession
from services.agents.catalogue import SPECS, missing_settings
from services.context import Backends, current_correlation_id
from services.errors import Invalid, TooMany
from services.prompts import composed_prompt
from services.sessions.lifecycle import ACTIVE, end_lost_sessions

# How long a caller over its session quota should wait before trying again.
QUOTA_RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class NewSession:
    agent_type: str  # canonical (services.agents.canonical_agent_type)
    prompt: str | None = None
    title: str | None = None
    custom_agent: str | None = None  # for agent_type custom: an allowlisted command name


async def start_session(
    backends: Backends, actor: MemberContext, new: NewSession
) -> tuple[UserSession, Event]:
    """Create the session row, then publish its request (after the commit)."""
    if new.custom_agent is not None and new.custom_agent not in backends.settings.custom_agents:
        raise Invalid.field(
            "custom_agent",
            "not an allowlisted command name",
            "custom_agent is not on this platform's allowlist",
        )
    await _refuse_unconfigured(backends, actor, new.agent_type)
    await _check_quota(backends, actor)
    system_prompt = await composed_prompt(backends, actor.org_id, actor.user_id, new.agent_type)
    async with tenant_transaction(backends.engine, actor) as db:
        row = UserSession(
            org_id=actor.org_id,
            user_id=actor.user_id,
            agent_type=new.agent_type,
            status="requested",
            title=new.title,
        )
        db.add(row)
        await db.flush()
    # Published after the commit, so a worker never sees a session row that does not exist yet.
    event = Event(
        type=EventType.SESSION_REQUESTED,
        org_id=row.org_id,
        user_id=row.user_id,
        session_id=row.id,
        correlation_id=current_correlation_id(),
        payload=SessionRequest(
            agent_type=row.agent_type,
            prompt=new.prompt,
            custom_agent=new.custom_agent,
            system_prompt=system_prompt,
        ).payload(),
    )
    try:
        await publish(backends.redis, backends.names, event)
    except (RedisError, OSError):
        # Nobody will ever host it: end the row now, or it would count against the caller's
        # session quota forever. The caller gets a 503 and tries again.
        async with tenant_transaction(backends.engine, actor) as db:
            stored = await db.get(UserSession, row.id)
            if stored is not None:
                stored.status, stored.end_reason = "failed", "not_started:event_bus_unavailable"
                stored.ended_at = datetime.now(UTC)
                db.add(stored)
        raise
    return row, event


async def _refuse_unconfigured(backends: Backends, actor: MemberContext, agent_type: str) -> None:
    """Refuse, naming the settings an agent type lacks here: its session would only fail (a Claude
    Code without a key answers "Not logged in" after a dozen seconds of `running`)."""
    tenant: dict[str, Any] = {}
    if SPECS[agent_type].tenant_section:
        async with tenant_transaction(backends.engine, actor) as db:
            query = select(TenantSettings).where(TenantSettings.org_id == actor.org_id)
            row = (await db.exec(query)).first()
        tenant = row.settings if row else {}
    missing = missing_settings(backends.settings, agent_type, tenant)
    if missing:
        needs = " or ".join(missing) if SPECS[agent_type].needs_one_of else ", ".join(missing)
        raise Invalid.field(
            "agent_type",
            f"cannot run here until {needs} is set",
            f"agent type {agent_type} is not configured",
        )


async def _check_quota(backends: Backends, actor: MemberContext) -> None:
    """Per-user and per-org limits on active sessions (a soft limit: two racing creates may both pass).

    Members see only their own rows under RLS, so the org-wide count reads as an org admin would;
    it returns counts only, never another member's rows.
    """
    settings = backends.settings
    counting = TenantContext(org_id=actor.org_id, user_id=actor.user_id, role="admin")
    async with tenant_transaction(backends.engine, counting) as db:
        active = await db.exec(
            select(UserSession.user_id, func.count())
            .where(UserSession.org_id == actor.org_id, col(UserSession.status).in_(ACTIVE))
            .group_by(col(UserSession.user_id))
        )
        counts = dict(active.all())
    if counts.get(actor.user_id, 0) >= settings.max_sessions_per_user or (
        sum(counts.values()) >= settings.max_sessions_per_org
    ):
        # Sessions whose host is gone hold no agent: end them before refusing the caller.
        if await end_lost_sessions(backends.engine, backends.redis, backends.names, settings, actor.org_id):
            await _check_quota(backends, actor)
            return
    if counts.get(actor.user_id, 0) >= settings.max_sessions_per_user:
        raise TooMany(
            f"you already have {settings.max_sessions_per_user} active sessions; stop one first",
            retry_after=QUOTA_RETRY_AFTER_SECONDS,
        )
    if sum(counts.values()) >= settings.max_sessions_per_org:
        raise TooMany(
            f"the organization already has {settings.max_sessions_per_org} active sessions",
            retry_after=QUOTA_RETRY_AFTER_SECONDS,
        )
