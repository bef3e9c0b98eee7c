"""``droid``: Factory's Droid CLI (npm @factory/cli, a native binary), interactive TUI in the PTY.

The deployment's OpenAI-compatible endpoint becomes a bring-your-own-key custom model in
``$HOME/.factory/settings.json`` (``customModels``, provider ``generic-chat-completion-api``),
selected as the session default; the MCP gateway is an ``http`` server in ``$HOME/.factory/mcp.json``
with its bearer header; the system prompt goes through ``--append-system-prompt-file``, which keeps
Droid's own prompt. ``--resume --last`` on recovery.

Droid needs a Factory account even with a custom model: without ``FACTORY_API_KEY`` it shows a
login screen, and it checks the key online at start-up (Droid 0.225.2 refused a made-up key), so it
could not be run against a local fake model here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

from services.agents.binaries import agent_binary
from workers.agents.base import AutoResponse, LaunchContext
from workers.agents.custom import write_private
from workers.agents.formatting import clean_message
from workers.agents.gateway import gateway_headers

MODEL_ID = "custom:agentapi"
FOOTER = re.compile(r"\? for help|shift\+tab to cycle|esc to (interrupt|stop)|Auto \((Off|Low|Medium|High)\)")
BULLET = re.compile(r"^(\s*)[⛬●•]\s")


def factory_dir(ctx: LaunchContext) -> Path:
    return ctx.home / ".factory"


class DroidAdapter:
    name: ClassVar[str] = "droid"
    aliases: ClassVar[tuple[str, ...]] = ("factory",)
    bracketed_paste: ClassVar[bool] = True
    paste_enter_delay: ClassVar[float] = 0.1
    auto_responses: ClassVar[tuple[AutoResponse, ...]] = ()

    def prepare(self, ctx: LaunchContext) -> None:
        settings: dict[str, Any] = {}
        if ctx.agent_env.get("OPENAI_BASE_URL") and ctx.agent_env.get("OPENAI_MODEL"):
            settings["customModels"] = [
                {
                    "id": MODEL_ID,
                    "model": ctx.agent_env["OPENAI_MODEL"],
                    "displayName": "agentapi",
                    "provider": "generic-chat-completion-api",
                    "baseUrl": ctx.agent_env["OPENAI_BASE_URL"],
                    "apiKey": ctx.agent_env.get("OPENAI_API_KEY", ""),
                }
            ]
            settings["sessionDefaultSettings"] = {"model": MODEL_ID}
        write_private(factory_dir(ctx) / "settings.json", json.dumps(settings))
        servers = {}
        if ctx.mcp_gateway_url:
            servers["agentapi"] = {
                "type": "http",
                "url": ctx.mcp_gateway_url,
                "headers": gateway_headers(ctx),
            }
        write_private(factory_dir(ctx) / "mcp.json", json.dumps({"mcpServers": servers}))
        if ctx.system_prompt:
            write_private(self._prompt_file(ctx), ctx.system_prompt)

    @staticmethod
    def _prompt_file(ctx: LaunchContext) -> Path:
        return ctx.home / ".agentapi" / "system-prompt.md"

    def command(self, ctx: LaunchContext) -> list[str]:
        argv = [agent_binary("droid")]
        if ctx.system_prompt:
            argv += ["--append-system-prompt-file", str(self._prompt_file(ctx))]
        if ctx.resume:
            argv += ["--resume", "--last"]
        return argv

    def environment(self, ctx: LaunchContext) -> dict[str, str]:
        env = {"FACTORY_DROID_AUTO_UPDATE_ENABLED": "false"}
        if "FACTORY_API_KEY" in ctx.agent_env:
            env["FACTORY_API_KEY"] = ctx.agent_env["FACTORY_API_KEY"]
        return env

    def format_message(self, screen: str, user_input: str) -> str:
        lines = [BULLET.sub(r"\1  ", line) for line in screen.splitlines()]
        return clean_message("\n".join(lines), user_input, FOOTER)
