"""``gemini``: Google Gemini CLI (npm @google/gemini-cli), interactive TUI in the PTY.

``$HOME/.gemini/settings.json`` selects API-key auth (so no sign-in dialog), turns off folder
trust, update checks and usage statistics, and names the MCP gateway as a Streamable HTTP server
(``httpUrl`` + bearer header). The system prompt is the global context file ``~/.gemini/GEMINI.md``,
which Gemini CLI appends to its own system prompt, keeping its tool instructions (``GEMINI_SYSTEM_MD``
would replace them). The key and endpoint reach it as ``GEMINI_API_KEY`` and
``GOOGLE_GEMINI_BASE_URL``. ``--resume latest`` on recovery (with no saved session it only warns).

Verified with Gemini CLI 0.61.0 against a local fake Gemini API (tests/test_gemini_cli.py).
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from services.agents.binaries import agent_binary
from workers.agents.base import AutoResponse, LaunchContext
from workers.agents.custom import write_private
from workers.agents.formatting import clean_message
from workers.agents.gateway import gateway_headers

PASSED_THROUGH = ("GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL")
FOOTER = re.compile(
    r"\? for shortcuts|Shift\+Tab to accept edits|Type your message or @path|\d+ GEMINI\.md files?\b"
    r"|\(esc to cancel|accepting edits \(shift \+ tab|YOLO mode|^[▄▀]+$"
)
# The answer's first line carries a ✦; the tool boxes and progress lines carry their own glyphs.
BULLET = re.compile(r"^(\s*)✦\s")
SPINNER = re.compile(r"^\s*[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏⠁⠂⠄⡀⢀⠠⠐⠈]\s")


class GeminiAdapter:
    name: ClassVar[str] = "gemini"
    aliases: ClassVar[tuple[str, ...]] = ()
    bracketed_paste: ClassVar[bool] = True
    paste_enter_delay: ClassVar[float] = 0.1
    auto_responses: ClassVar[tuple[AutoResponse, ...]] = ()

    def prepare(self, ctx: LaunchContext) -> None:
        settings: dict[str, Any] = {
            "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
            "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
            "privacy": {"usageStatisticsEnabled": False},
            "ui": {"theme": "Default", "showCompatibilityWarnings": False, "hideFooter": True},
        }
        if ctx.agent_env.get("GEMINI_MODEL"):
            settings["model"] = {"name": ctx.agent_env["GEMINI_MODEL"]}
        if ctx.mcp_gateway_url:
            settings["mcpServers"] = {
                "agentapi": {"httpUrl": ctx.mcp_gateway_url, "headers": gateway_headers(ctx)}
            }
        write_private(ctx.home / ".gemini" / "settings.json", json.dumps(settings))
        if ctx.system_prompt:
            write_private(ctx.home / ".gemini" / "GEMINI.md", ctx.system_prompt)

    def command(self, ctx: LaunchContext) -> list[str]:
        argv = [agent_binary("gemini")]
        if ctx.resume:
            argv += ["--resume", "latest"]
        return argv

    def acp_command(self, ctx: LaunchContext) -> list[str]:
        """Gemini CLI's own ACP mode; settings.json and GEMINI.md are read as in the PTY."""
        return [agent_binary("gemini"), "--experimental-acp"]

    def acp_session_meta(self, ctx: LaunchContext) -> dict[str, object]:
        return {}

    def acp_environment(self, ctx: LaunchContext) -> dict[str, str]:
        # Without these, over ACP a relaunched child keeps the pipes open (shutdown hangs), and the
        # MCP servers of an untrusted folder are skipped silently.
        return {
            **self.environment(ctx),
            "GEMINI_CLI_NO_RELAUNCH": "true",
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
        }

    def environment(self, ctx: LaunchContext) -> dict[str, str]:
        return {key: ctx.agent_env[key] for key in PASSED_THROUGH if key in ctx.agent_env}

    def format_message(self, screen: str, user_input: str) -> str:
        lines = [line for line in screen.splitlines() if not SPINNER.search(line)]
        lines = [BULLET.sub(r"\1  ", line) for line in lines]
        return clean_message("\n".join(lines), user_input, FOOTER)
