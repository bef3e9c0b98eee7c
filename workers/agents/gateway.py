"""How adapters hand the session's MCP gateway to a CLI: the bearer header its config file carries."""

from __future__ import annotations

from workers.agents.base import LaunchContext


def gateway_headers(ctx: LaunchContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.mcp_gateway_token}"}
