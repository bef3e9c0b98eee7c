"""Pending MCP authorizations, by their OAuth ``state``: random, bound to the user, configuration
and redirect URI, kept in Redis for ``AGENTAPI_MCP_OAUTH_STATE_TTL_SECONDS`` and usable once.

Beside each pending record a longer-lived note remembers whose state it was and whether it was
used, so a late or replayed callback is refused with its real reason (expired, reused) and can be
audited under the right organization; a state never issued is simply unknown.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from events import replies
from events.streams import Names

# How long a used or expired state is still recognised as such.
NOTE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class PendingAuthorization:
    org_id: str
    user_id: str
    config_id: str
    redirect_uri: str
    code_verifier: str
    # ClientInfo as JSON; a registered client's secret travels sealed (pending_id is its row id).
    client: dict[str, Any]
    pending_id: str
    sealed_client_secret: str | None = None
    # Where the GET callback sends the browser once connected, instead of answering the popup page.
    return_to: str | None = None


@dataclass(frozen=True)
class StateOwner:
    org_id: UUID
    user_id: UUID
    config_id: UUID


class StateRefused(Exception):
    """``code`` is one of unknown, expired, reused; ``owner`` when the state was ever issued."""

    def __init__(self, code: str, detail: str, owner: StateOwner | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.owner = owner


def owner_of(pending: PendingAuthorization) -> StateOwner:
    return StateOwner(UUID(pending.org_id), UUID(pending.user_id), UUID(pending.config_id))


async def issue(redis: Redis, names: Names, pending: PendingAuthorization, ttl_seconds: int) -> str:
    state = secrets.token_urlsafe(32)
    note: dict[FieldT, EncodableT] = {
        "org_id": pending.org_id,
        "user_id": pending.user_id,
        "config_id": pending.config_id,
        "used": "0",
    }
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(names.oauth_state(state), json.dumps(asdict(pending)), ex=ttl_seconds)
        pipe.hset(names.oauth_state_used(state), mapping=note)
        pipe.expire(names.oauth_state_used(state), ttl_seconds + NOTE_SECONDS)
        await pipe.execute()
    return state


async def consume(redis: Redis, names: Names, state: str) -> PendingAuthorization:
    """The pending authorization, removed so it cannot be used again; StateRefused otherwise."""
    raw = await redis.getdel(names.oauth_state(state))
    note_key = names.oauth_state_used(state)
    if raw is not None:
        await redis.hset(note_key, "used", "1")
        return PendingAuthorization(**json.loads(raw))
    note = replies.fields(await redis.hgetall(note_key))
    if not note:
        raise StateRefused("unknown", "unknown state: this authorization was not started here")
    owner = StateOwner(UUID(note["org_id"]), UUID(note["user_id"]), UUID(note["config_id"]))
    if note.get("used") == "1":
        raise StateRefused(
            "reused", "state already used: each authorization completes once; start a new one", owner
        )
    raise StateRefused("expired", "state expired: the authorization took too long; start a new one", owner)
