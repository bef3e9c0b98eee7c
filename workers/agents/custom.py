"""``custom``: an admin-allowlisted command (the ingress checks the allowlist), generic screen rules.

The system prompt and the MCP gateway reach it as files named by environment variables, since an
arbitrary CLI has no flag we could rely on.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar

from workers.agents.base import AutoResponse, LaunchContext
from workers.agents.formatting import clean_message

FOOTER = re.compile(r"\?\s+for shortcuts|esc to interrupt")


def write_private(path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)


class CustomAdapter:
    name: ClassVar[str] = "custom"
    aliases: ClassVar[tuple[str, ...]] = ()
    bracketed_paste: ClassVar[bool] = True
    # No gap: the generic rules assume a CLI where an Enter is a submit, and a gap would be added to
    # every reply's latency.
    paste_enter_delay: ClassVar[float] = 0.0
    auto_responses: ClassVar[tuple[AutoResponse, ...]] = (
        AutoResponse(re.compile(r"Do you trust the files in this folder\? \(y/n\)"), b"y"),
    )

    def prepare(self, ctx: LaunchContext) -> None:
        write_private(ctx.home / ".agentapi" / "system-prompt.md", ctx.system_prompt)
        servers = {}
        if ctx.mcp_gateway_url:
            servers["agentapi"] = {
                "type": "http",
                "url": ctx.mcp_gateway_url,
                "headers": {"Authorization": f"Bearer {ctx.mcp_gateway_token}"},
            }
        write_private(ctx.home / ".agentapi" / "mcp.json", json.dumps({"mcpServers": servers}))

    def command(self, ctx: LaunchContext) -> list[str]:
        if not ctx.custom_command:
            raise ValueError("custom agent sessions need an allowlisted command")
        return list(ctx.custom_command)

    def environment(self, ctx: LaunchContext) -> dict[str, str]:
        return {
            "AGENTAPI_SYSTEM_PROMPT_FILE": str(ctx.home / ".agentapi" / "system-prompt.md"),
            "AGENTAPI_MCP_CONFIG": str(ctx.home / ".agentapi" / "mcp.json"),
        }

    def format_message(self, screen: str, user_input: str) -> str:
        return clean_message(screen, user_input, FOOTER)
