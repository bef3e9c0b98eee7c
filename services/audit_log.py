"""Audit rows: ``audit.recorded`` events stored in ``audit_logs``, idempotent by event id and
hash-chained per organization in ``seq`` order under a per-org advisory lock, so that the audit
writer and an ingress writing directly (when the event stream is unreachable) never fork a chain."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select

from events.envelope import Event
from events.payloads import AuditRecord
from schemas.audit_chain import PLATFORM, row_hash
from schemas.db import tenant_transaction
from schemas.tables import AuditLog


def _row(event: Event) -> dict[str, Any]:
    record = AuditRecord.of(event)
    return {
        "org_id": event.org_id,
        "event_id": event.id,
        "ts": event.ts,
        "actor_user_id": event.user_id,
        "action": record.action,
        "resource_type": record.resource_type,
        "resource_id": record.resource_id,
        "outcome": record.outcome,
        "ip": record.ip,
        "user_agent": record.user_agent,
        "correlation_id": event.correlation_id[:128],
        "details": record.details,
    }


async def write_batch(engine: AsyncEngine, events: list[Event]) -> int:
    """Store the events not stored yet, chained per org; returns how many rows were written."""
    if not events:
        return 0
    written = 0
    postgres = engine.dialect.name == "postgresql"
    async with tenant_transaction(engine, PLATFORM) as db:
        by_org: dict[UUID, dict[str, Event]] = {}
        for event in events:
            by_org.setdefault(event.org_id, {}).setdefault(event.id, event)
        for org_id, org_batch in sorted(by_org.items(), key=lambda item: str(item[0])):
            if postgres:
                # Two writers appending to one org's chain would fork it; they take turns per org.
                await db.exec(
                    text("SELECT pg_advisory_xact_lock(hashtextextended(:org, 7))").bindparams(
                        org=str(org_id)
                    )
                )  # type: ignore[call-overload]  # SQLModel's exec takes no textual SQL; its execute is marked deprecated
            # Looked up under the lock: a writer that stored the same events (the audit writer and
            # an ingress that wrote directly after a publish that reached Redis after all) has
            # committed by now, and storing them again would fail on their event ids.
            stored = set(
                (
                    await db.exec(
                        select(AuditLog.event_id).where(col(AuditLog.event_id).in_(list(org_batch)))
                    )
                ).all()
            )
            org_events = [event for event_id, event in org_batch.items() if event_id not in stored]
            last = (
                await db.exec(
                    select(AuditLog.seq, AuditLog.hash)
                    .where(AuditLog.org_id == org_id)
                    .order_by(col(AuditLog.seq).desc())
                    .limit(1)
                )
            ).first()
            seq, prev_hash = (int(last[0]), str(last[1])) if last else (0, None)
            for event in sorted(org_events, key=lambda e: e.id):
                seq += 1
                row = _row(event) | {"seq": seq}
                digest = row_hash(prev_hash, row)
                db.add(AuditLog(**row, prev_hash=prev_hash, hash=digest))
                prev_hash = digest
                written += 1
    return written
