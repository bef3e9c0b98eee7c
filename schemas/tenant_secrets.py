"""A tenant's write-only secrets (tenant_settings.encrypted_secrets), opened for whoever needs them:
the ingress lists their names; the sessions worker hands provider keys to a session's config."""

from __future__ import annotations

import json

from schemas.crypto import KeyRing, SecretRef
from schemas.tables import TenantSettings


def secrets_ref(row: TenantSettings) -> SecretRef:
    return SecretRef("tenant_settings", "encrypted_secrets", row.id, row.org_id)


def open_tenant_secrets(ring: KeyRing, row: TenantSettings) -> dict[str, str]:
    if not row.encrypted_secrets:
        return {}
    return dict(json.loads(ring.decrypt(row.encrypted_secrets, secrets_ref(row))))
