"""Session client keys: short-lived opaque credentials that let a published coder/agentapi client
(which can send no JWT, only URL userinfo) drive one session through the port-less root paths.

A key is ``ask_`` and 43 URL-safe characters (256 random bits), so it fits in a URL's userinfo
unescaped. Redis keeps only its SHA-256, with the grant it stands for (organization, session, user,
role) and a TTL, so a leaked Redis dump holds no usable key and an expired key is simply gone. A
per-session set lists the session's key hashes so that all of them can be revoked at once.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from events import replies
from events.streams import secret_digest
from schemas.db import MemberContext
from schemas.tables import UserSession
from services.context import Backends
from services.errors import Invalid

KEY_PREFIX = "ask_"
# token_urlsafe(32): 32 random bytes, 43 characters of the URL-safe base64 alphabet.
KEY_PATTERN = re.compile(r"ask_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class ClientKeyGrant:
    """What a valid key stands for: who minted it, as what, for which session."""

    org_id: UUID
    session_id: UUID
    user_id: UUID
    role: str


def looks_like_key(credential: str) -> bool:
    """Whether a credential is shaped like a client key (a JWT never starts with ``ask_``)."""
    return credential.startswith(KEY_PREFIX)


async def mint_client_key(
    backends: Backends, actor: MemberContext, row: UserSession, ttl_seconds: int | None
) -> tuple[str, datetime]:
    """A new key for ``row`` acting as ``actor``, and when it expires. ``ttl_seconds`` may ask for
    less than the configured lifetime, never more (422)."""
    limit = backends.settings.client_key_ttl_seconds
    if ttl_seconds is not None and ttl_seconds > limit:
        raise Invalid.field("ttl_seconds", f"must be at most {limit} (AGENTAPI_CLIENT_KEY_TTL_SECONDS)")
    ttl = ttl_seconds or limit
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    digest = secret_digest(key)
    grant = {
        "org_id": str(actor.org_id),
        "session_id": str(row.id),
        "user_id": str(actor.user_id),
        "role": actor.role,
    }
    index = backends.names.session_client_keys(row.id)
    async with backends.redis.pipeline(transaction=True) as pipe:
        pipe.set(backends.names.client_key(digest), json.dumps(grant), ex=ttl)
        pipe.sadd(index, digest)
        # The index outlives every key listed in it: no key is ever longer-lived than the limit.
        pipe.expire(index, limit)
        await pipe.execute()
    return key, datetime.now(UTC) + timedelta(seconds=ttl)


async def revoke_client_keys(backends: Backends, session_id: UUID) -> int:
    """Delete every key of the session; how many were still valid. A key minted while this runs
    is not in the snapshot read here and stays valid, as if minted just after."""
    index = backends.names.session_client_keys(session_id)
    digests = list(replies.members(await backends.redis.smembers(index)))
    if not digests:
        return 0
    async with backends.redis.pipeline(transaction=True) as pipe:
        pipe.delete(*(backends.names.client_key(d) for d in digests))
        pipe.srem(index, *digests)
        deleted, _ = await pipe.execute()
    return int(deleted)


async def resolve_client_key(backends: Backends, key: str) -> ClientKeyGrant | None:
    """The grant of a valid key; None for one that is malformed, unknown, expired or revoked."""
    if not KEY_PATTERN.fullmatch(key):
        return None
    raw = await backends.redis.get(backends.names.client_key(secret_digest(key)))
    if raw is None:
        return None
    entry = json.loads(raw)
    return ClientKeyGrant(
        org_id=UUID(entry["org_id"]),
        session_id=UUID(entry["session_id"]),
        user_id=UUID(entry["user_id"]),
        role=entry["role"],
    )
