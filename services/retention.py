"""Retention: sessions (with their messages and workspace records) older than their
organization's ``retention_days`` are deleted, and their workspace snapshots with them (a session
that ended cleanly erased its own; one whose host gave up did not). Run it from a scheduler:
``agentapi retention run``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from obstore.store import ObjectStore
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel import delete as sql_delete

from schemas.db import TenantContext, tenant_transaction
from schemas.tables import TenantSettings, UserSession
from services.workspace_store import erase_prefix, session_prefix

PLATFORM = TenantContext(org_id=None, user_id=None, role="superadmin")
FINISHED = ("ended", "failed")


async def purge_expired(
    engine: AsyncEngine, now: datetime | None = None, store: ObjectStore | None = None
) -> dict[str, int]:
    """Deleted session counts by org id; messages and workspace rows go with them (cascade), and
    their snapshots in ``store``."""
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
        assert days is not None  # the query leaves out orgs without a retention period
        cutoff = now - timedelta(days=days)
        org = TenantContext(org_id=org_id, user_id=None, role="admin")
        async with tenant_transaction(engine, org) as db:
            result = await db.exec(
                sql_delete(UserSession)
                .where(
                    col(UserSession.org_id) == org_id,
                    col(UserSession.status).in_(FINISHED),
                    col(UserSession.ended_at) < cutoff,
                )
                .returning(col(UserSession.user_id), col(UserSession.id))
            )
            gone = list(result)
            # Before the commit: if the store is away, the rows stay and the next run tries again.
            if store is not None:
                for user_id, session_id in gone:
                    prefix = session_prefix(org_id, user_id, session_id)
                    await asyncio.to_thread(erase_prefix, store, prefix)
        deleted[str(org_id)] = len(gone)
    return deleted
