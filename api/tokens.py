"""Minting Supabase-shaped HS256 tokens, for `agentapi token`, `agentapi dev` and tests.

The claim shape is what Supabase Auth issues (``sub``, ``aud``, ``exp``, ``iat``, top-level
``role: "authenticated"``), with the organization and role in ``app_metadata``, which only the service
role can write.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import jwt

from schemas.roles import ROLES


def supabase_claims(
    *,
    user_id: UUID | str,
    org_id: UUID | str | None,
    role: str,
    audience: str = "authenticated",
    ttl_seconds: int = 3600,
    email: str | None = None,
    superadmin: bool = False,
    issuer: str | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """The claims of a Supabase-compatible access token (not signed)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    issued = int(time.time()) if now is None else now
    app_metadata: dict[str, Any] = {"role": role}
    if org_id is not None:
        app_metadata["org_id"] = str(UUID(str(org_id)))
    if superadmin:
        app_metadata["superadmin"] = True
    claims: dict[str, Any] = {
        "sub": str(UUID(str(user_id))),
        "aud": audience,
        "iat": issued,
        "exp": issued + int(ttl_seconds),
        "role": "authenticated",
        "aal": "aal1",
        "app_metadata": app_metadata,
        "user_metadata": {},
        "is_anonymous": False,
    }
    if email is not None:
        claims["email"] = email
    if issuer is not None:
        claims["iss"] = issuer
    return claims


def mint_token(
    secret: str | bytes,
    *,
    user_id: UUID | str,
    org_id: UUID | str | None,
    role: str,
    audience: str = "authenticated",
    ttl_seconds: int = 3600,
    email: str | None = None,
    superadmin: bool = False,
    issuer: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 token signed with the shared secret (``AGENTAPI_JWT_SECRET`` / ``SUPABASE_JWT_SECRET``)."""
    if not secret:
        raise ValueError("a JWT secret is required")
    claims = supabase_claims(
        user_id=user_id,
        org_id=org_id,
        role=role,
        audience=audience,
        ttl_seconds=ttl_seconds,
        email=email,
        superadmin=superadmin,
        issuer=issuer,
    )
    if extra_claims:
        claims.update(extra_claims)
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})
