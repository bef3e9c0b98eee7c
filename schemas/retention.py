"""Retention: sessions (with their messages and workspace records) older than their
organization's ``retention_days`` are deleted. Run it from a scheduler: ``agentapi retention run``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel import delete as sql_delete

from schemas.db import TenantContext, tenant_transaction
from schemas.tables import TenantSettings, UserSession

PLATFORM = TenantContext(org_id=None, user_id=None, role="superadmin")
FINISHED = ("ended", "failed")


async def purge_expired(engine: AsyncEngine, now: datetime | None = None) -> dict[str, int]:
    """Deleted session counts by org id; messages and workspace rows go with them (cascade)."""
    now = now or datetime.now(UTC)
    async with tenant_transaction(engine, PLATFORM) as db:
        policies = list(
            await db.exec(
                select(TenantSettings.org_id, TenantSettings.retention_days).where(
                    col(TenantSettings.retention_days).is_not(None)
                )
            )
        )
    deleted: dict[str, int] = {}
    for org_id, days in policies:
        cutoff = now - timedelta(days=int(days))
        org = TenantContext(org_id=org_id, user_id=None, role="admin")
        async with tenant_transaction(engine, org) as db:
            result = await db.exec(  # type: ignore[call-overload]
                sql_delete(UserSession).where(
                    UserSession.org_id == org_id,
                    col(UserSession.status).in_(FINISHED),
                    col(UserSession.ended_at) < cutoff,
                )
            )
            deleted[str(org_id)] = int(result.rowcount or 0)
    return deleted
