"""The agent types this deployment offers, and what each still needs before it can run."""

from __future__ import annotations

from typing import Literal

from litestar import Request, get
from litestar.datastructures import State
from pydantic import BaseModel, Field
from sqlmodel import select

from api.auth import Principal
from api.state import resources
from api.tenancy import tenant_context
from schemas.db import tenant_transaction
from schemas.tables import TenantSettings
from services.agents.catalogue import describe


class AgentOut(BaseModel):
    type: str
    label: str
    aliases: list[str]
    installed: bool = Field(description="every CLI this type starts is found on this deployment")
    transport: Literal["acp", "pty"] = Field(
        description="how sessions drive it: the Agent Client Protocol or the terminal screen"
    )
    configured: bool = Field(description="nothing in `needs`: the provider key or tenant settings are set")
    needs: list[str] = Field(description="settings to set first: AGENTAPI_* variables or tenant settings")
    custom_agents: list[str] = Field(description="for `custom`: the allowlisted command names")


class AgentsOut(BaseModel):
    agents: list[AgentOut]


@get("/api/v1/agents", tags=["sessions"])
async def list_agents(request: Request[Principal, str, State], state: State) -> AgentsOut:
    """Agent types, which are installed and configured here, and which need settings (for a picker)."""
    res = resources(state)
    ctx = tenant_context(request.user)
    async with tenant_transaction(res.engine, ctx) as db:
        row = (await db.exec(select(TenantSettings).where(TenantSettings.org_id == ctx.org_id))).first()
    agents = describe(res.settings, row.settings if row else {})
    return AgentsOut(agents=[AgentOut(**agent) for agent in agents])
