"""The audit log's hash chain: each row's hash covers its content and its org's previous hash.

Changing, removing or reordering a row breaks the chain from that row on; ``agentapi audit
verify`` walks each org's rows in ``seq`` order and names the first row whose hash is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.db import TenantContext, tenant_transaction

GENESIS = "0" * 64
PLATFORM = TenantContext(org_id=None, user_id=None, role="superadmin")
HASHED_FIELDS = (
    "org_id", "seq", "event_id", "ts", "actor_user_id", "action", "resource_type", "resource_id",
    "outcome", "ip", "user_agent", "correlation_id", "details",
)  # fmt: skip


def _canonical(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def row_hash(prev_hash: str | None, row: dict[str, Any]) -> str:
    body = {name: _canonical(row.get(name)) for name in HASHED_FIELDS}
    if body["actor_user_id"] is not None:
        body["actor_user_id"] = str(UUID(str(body["actor_user_id"])))
    body["org_id"] = str(UUID(str(body["org_id"])))
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(((prev_hash or GENESIS) + encoded).encode()).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    org_id: UUID
    row_id: UUID
    seq: int
    reason: str


async def verify(engine: AsyncEngine, org_id: UUID | None = None) -> tuple[int, list[ChainBreak]]:
    """Rows checked, and the first broken link of each org (empty when every chain holds)."""
    where = "WHERE org_id = :org" if org_id else ""
    query = text(
        f"SELECT id, {', '.join(HASHED_FIELDS)}, prev_hash, hash FROM audit_logs {where} ORDER BY org_id, seq"
    )
    checked, breaks = 0, []
    broken_orgs: set[str] = set()
    last: dict[str, tuple[int, str]] = {}
    async with tenant_transaction(engine, PLATFORM) as db:
        result = await db.stream(query, {"org": org_id} if org_id else {})
        async for record in result.mappings():
            row = dict(record)
            org = str(row["org_id"])
            if org in broken_orgs:
                continue
            checked += 1
            expected_seq, expected_prev = last.get(org, (1, GENESIS))
            reason = None
            if row["seq"] != expected_seq:
                reason = f"sequence gap: expected seq {expected_seq}, found {row['seq']}"
            elif (row["prev_hash"] or GENESIS) != expected_prev:
                reason = "prev_hash does not match the previous row's hash"
            elif row_hash(row["prev_hash"], row) != row["hash"]:
                reason = "content does not match its hash (the row was changed)"
            if reason:
                breaks.append(ChainBreak(UUID(org), UUID(str(row["id"])), int(row["seq"]), reason))
                broken_orgs.add(org)
                continue
            last[org] = (int(row["seq"]) + 1, row["hash"])
    return checked, breaks
