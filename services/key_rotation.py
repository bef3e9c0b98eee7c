"""``agentapi keys rotate``: re-seal every stored secret under the key ring's primary key.

It works in small committed batches and only touches ciphertexts sealed under another key, so an
interrupted rotation is resumed by running it again. Once it reports nothing left, the old key can
be removed from ``AGENTAPI_ENCRYPTION_KEYS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.crypto import DecryptionError, KeyRing, SecretRef
from schemas.db import TenantContext, tenant_transaction

# Every column that holds a ciphertext, by table.
ENCRYPTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "mcp_configurations": ("encrypted_secret",),
    "mcp_oauth_tokens": ("encrypted_access_token", "encrypted_refresh_token", "encrypted_client_secret"),
    "tenant_settings": ("encrypted_secrets",),
    "webhooks": ("encrypted_secret",),
}
# Rotation is a platform operation across tenants.
PLATFORM = TenantContext(org_id=None, user_id=None, role="superadmin")


@dataclass
class RotationReport:
    rotated: dict[str, int] = field(default_factory=dict)
    # Secrets that do not open under any key of the ring (tampered, moved, or sealed under a key
    # that was dropped too early): named so an operator can look at them; they are left as they are.
    failed: list[str] = field(default_factory=list)
    remaining: int = 0

    @property
    def total(self) -> int:
        return sum(self.rotated.values())


async def rotate_all(engine: AsyncEngine, ring: KeyRing, *, batch_size: int = 200) -> RotationReport:
    report = RotationReport()
    prefix = f"v1.{ring.primary_id}.%"
    for table, columns in ENCRYPTED_COLUMNS.items():
        for column in columns:
            name = f"{table}.{column}"
            report.rotated[name] = 0
            # Keyset pagination by id, so rows that cannot be rotated are passed over, not re-read.
            select = text(
                f"SELECT id, org_id, {column} FROM {table} WHERE {column} IS NOT NULL"
                f" AND {column} NOT LIKE :prefix AND id > :after ORDER BY id LIMIT :limit"
            )
            update = text(f"UPDATE {table} SET {column} = :value WHERE id = :id AND {column} = :old")
            after: object = "00000000-0000-0000-0000-000000000000"
            while True:
                async with tenant_transaction(engine, PLATFORM) as db:
                    rows = (
                        await db.execute(select, {"prefix": prefix, "after": after, "limit": batch_size})
                    ).all()
                    for row_id, org_id, sealed in rows:
                        ref = SecretRef(table, column, _uuid(row_id), _uuid(org_id) if org_id else None)
                        try:
                            value = ring.rotate(sealed, ref)
                        except DecryptionError as exc:
                            report.failed.append(f"{name} row {ref.row_id}: {exc}")
                            continue
                        await db.execute(update, {"value": value, "id": row_id, "old": sealed})
                        report.rotated[name] += 1
                if len(rows) < batch_size:
                    break
                after = rows[-1][0]
    async with tenant_transaction(engine, PLATFORM) as db:
        for table, columns in ENCRYPTED_COLUMNS.items():
            for column in columns:
                count = text(
                    f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL AND {column} NOT LIKE :prefix"
                )
                report.remaining += int((await db.execute(count, {"prefix": prefix})).scalar_one())
    return report


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
