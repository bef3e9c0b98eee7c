"""GDPR: export a user's data, and erase it.

Both act within the caller's organization: a user on their own data, or an org admin/owner on a
member's. Erasure stops the user's live sessions, deletes their sessions, messages, prompts, MCP
configurations and tokens in this organization, asks a worker to delete their workspace files,
and, once they belong to no organization, clears what identifies them from the user row. Audit rows stay (the trail is
append-only) and keep only the user's id, which no longer leads to a person.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Request, delete, get
from litestar.datastructures import State

from api.auth import Principal
from api.state import resources
from api.tenancy import forget_membership, tenant_context
from services import gdpr


@get("/api/v1/users/{user_id:uuid}/export", tags=["users"])
async def export_user(user_id: UUID, request: Request[Principal, str, State], state: State) -> dict[str, Any]:
    """Everything this organization holds about the user, as JSON. Secrets are never included."""
    return await gdpr.export_user(resources(state), tenant_context(request.user), user_id)


@delete("/api/v1/users/{user_id:uuid}", status_code=204, tags=["users"])
async def erase_user(user_id: UUID, request: Request[Principal, str, State], state: State) -> None:
    """Erase the user's data in this organization (GDPR). Audit rows are kept, keyed only by id."""
    ctx = tenant_context(request.user)
    await gdpr.erase_user(resources(state), ctx, user_id)
    forget_membership(ctx.org_id, user_id)
