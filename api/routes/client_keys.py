"""Session client keys (``services.sessions.client_keys``): minted and revoked with a JWT by whoever
may see the session (its owner, an organization admin), used by published coder/agentapi clients
on the session's root-path alias (``api.session_alias``). Both actions are on the audit trail, as
every mutating request is (``api.audit_trail``)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from litestar import Request, delete, post
from litestar.datastructures import State
from pydantic import BaseModel, Field

from api.auth import Principal
from api.problems import StrictBody, problem_responses
from api.state import resources
from api.tenancy import tenant_context
from services.sessions.client_keys import mint_client_key, revoke_client_keys
from services.sessions.input import refuse_if_over
from services.sessions.lookup import find_session

PATH = "/api/v1/sessions/{session_id:uuid}/client-keys"


class CreateClientKey(StrictBody):
    ttl_seconds: int | None = Field(
        None,
        ge=60,
        description="seconds the key lives; at most (and by default) AGENTAPI_CLIENT_KEY_TTL_SECONDS",
    )


class ClientKeyOut(BaseModel):
    key: str = Field(description="shown once; only its hash is kept")
    expires_at: datetime
    url: str = Field(
        description="the base URL to give a coder/agentapi client: the key as userinfo (sent as Basic auth)"
    )


class Revoked(BaseModel):
    revoked: int = Field(description="how many of the session's keys were still valid")


@post(PATH, status_code=201, tags=["sessions"], responses=problem_responses(410))
async def create_client_key(
    session_id: UUID,
    request: Request[Principal, str, State],
    state: State,
    data: CreateClientKey | None = None,
) -> ClientKeyOut:
    """A key that lets a published coder/agentapi client (cyberian, mcp-agentapi) drive this one
    session through `/status`, `/messages`, `/message`, `/events` and `/internal/screen` at the root,
    acting as the caller. 410 once the session is over."""
    res, actor = resources(state), tenant_context(request.user)
    row = await find_session(res, actor, session_id)
    refuse_if_over(row)
    key, expires_at = await mint_client_key(res, actor, row, data.ttl_seconds if data else None)
    return ClientKeyOut(key=key, expires_at=expires_at, url=res.settings.client_key_url(key))


@delete(PATH, status_code=200, tags=["sessions"])
async def revoke_client_keys_of_session(
    session_id: UUID, request: Request[Principal, str, State], state: State
) -> Revoked:
    """Revoke every client key of the session at once (whoever minted them)."""
    res = resources(state)
    row = await find_session(res, tenant_context(request.user), session_id)
    return Revoked(revoked=await revoke_client_keys(res, row.id))
