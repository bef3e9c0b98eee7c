"""``codex``: OpenAI Codex CLI (npm @openai/codex, a Rust binary), interactive TUI in the PTY.

Everything lives in ``$CODEX_HOME/config.toml`` under the session's HOME: a model provider for the
deployment's OpenAI-compatible endpoint (Responses API; Codex has dropped chat completions) whose
key Codex reads from ``OPENAI_API_KEY``, the MCP gateway as a Streamable HTTP server with its bearer
header, the workspace marked trusted, and Codex's own "Auto" mode (workspace-write sandbox,
approval only to step outside it). The system prompt is the global ``$CODEX_HOME/AGENTS.md``, which
Codex adds to its own instructions. ``--no-daemon``: otherwise Codex starts a background app server
that outlives the PTY's process group and copies its 300 MB binary into CODEX_HOME.

Verified with Codex 0.169.0 against a local fake Responses API (tests/test_codex_cli.py), and over
ACP with codex-acp 0.16.0 (tests/test_acp_codex.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import tomli_w

from services.agents.binaries import agent_binary
from workers.agents.base import AutoResponse, ErrorScreen, LaunchContext
from workers.agents.custom import write_private
from workers.agents.formatting import clean_message, drop_echo
from workers.agents.gateway import gateway_headers

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROVIDER = "agentapi"
# Progress and status lines: "Worked for 3s • 10:42", "• Working (5s • esc to interrupt)".
PROGRESS = re.compile(r"^\s*(─ )?Worked for \S+|^\s*[•◦]\s+Working\b|esc to interrupt")
# The prompt of Codex's input box (U+203A); its hint and status lines sit below it.
COMPOSER = "\u203a"
# Those lines, for screens where the input box itself did not change: "? for shortcuts",
# "← for agents", "⚠ 2 warnings · f2 to view", "gpt-5 high · ~/project".
FOOTER = re.compile(
    r"\? for shortcuts|← for agents|f2 to view|^\s*\S+ (default|minimal|low|medium|high|xhigh) · "
    r"|^\s*└ Tip: "
)
BULLET = re.compile(r"^(\s*)•\s")
# Codex 0.169's failure lines (tests/agents/golden/codex/errors): an error cell ("■ Missing
# environment variable: `OPENAI_API_KEY`.", "■ unexpected status 429 …") and, while it retries,
# "Reconnecting... waiting for network" over "└ Connection failed: error sending request".
ERROR_SCREENS = (
    ErrorScreen(re.compile(r"^\s*■ Missing environment variable"), "not_logged_in", "error"),
    ErrorScreen(re.compile(r"^\s*■ .*(429|Too Many Requests|[Rr]ate limit)"), "rate_limited", "error"),
    ErrorScreen(re.compile(r"^\s*■ .*([Ee]rror|failed|unexpected status)"), "api_error", "error"),
    ErrorScreen(re.compile(r"^\s*└ Connection failed|^\s*Reconnecting\.\.\."), "api_error", "warning"),
)


def codex_home(ctx: LaunchContext) -> Path:
    return ctx.home / ".codex"


class CodexAdapter:
    name: ClassVar[str] = "codex"
    aliases: ClassVar[tuple[str, ...]] = ()
    bracketed_paste: ClassVar[bool] = True
    paste_enter_delay: ClassVar[float] = 0.1
    auto_responses: ClassVar[tuple[AutoResponse, ...]] = ()
    error_screens: ClassVar[tuple[ErrorScreen, ...]] = ERROR_SCREENS
    # Its input box: before it, a loaded host may show only a start-up warning for seconds.
    ready_marker: ClassVar[str] = COMPOSER

    def prepare(self, ctx: LaunchContext) -> None:
        config: dict[str, Any] = {
            "model_provider": PROVIDER,
            "approval_policy": "on-request",
            "sandbox_mode": "workspace-write",
            "check_for_update_on_startup": False,
            "model_providers": {
                PROVIDER: {
                    "name": "agentapi",
                    "base_url": ctx.agent_env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
                    "env_key": "OPENAI_API_KEY",
                    "wire_api": "responses",
                }
            },
            "projects": {str(ctx.workspace): {"trust_level": "trusted"}},
            "tui": {"animations": False},
        }
        if ctx.agent_env.get("OPENAI_MODEL"):
            config["model"] = ctx.agent_env["OPENAI_MODEL"]
        if ctx.mcp_gateway_url:
            # required: Codex starts its first turn only once the gateway's tools are listed;
            # otherwise a prompt typed while the server is still connecting goes to the model
            # without them (seen under load), and a gateway it cannot reach is a startup error.
            config["mcp_servers"] = {
                "agentapi": {
                    "url": ctx.mcp_gateway_url,
                    "http_headers": gateway_headers(ctx),
                    "required": True,
                }
            }
        write_private(codex_home(ctx) / "config.toml", tomli_w.dumps(config))
        if ctx.system_prompt:
            write_private(codex_home(ctx) / "AGENTS.md", ctx.system_prompt)

    def command(self, ctx: LaunchContext) -> list[str]:
        argv = [agent_binary("codex")]
        if ctx.resume:
            argv += ["resume", "--last"]
        return [*argv, "--no-daemon"]

    def acp_command(self, ctx: LaunchContext) -> list[str]:
        """Codex over ACP (npm @zed-industries/codex-acp, built on Codex's own core): it reads the
        same ``$CODEX_HOME/config.toml`` and ``AGENTS.md`` as the CLI in the PTY."""
        return [agent_binary("codex-acp")]

    def acp_session_meta(self, ctx: LaunchContext) -> dict[str, object]:
        return {}

    def environment(self, ctx: LaunchContext) -> dict[str, str]:
        env = {"CODEX_HOME": str(codex_home(ctx))}
        if "OPENAI_API_KEY" in ctx.agent_env:
            env["OPENAI_API_KEY"] = ctx.agent_env["OPENAI_API_KEY"]
        return env

    def format_message(self, screen: str, user_input: str) -> str:
        lines = drop_echo(screen.splitlines(), user_input, markers=(COMPOSER,))
        # With the echo gone, the last prompt line is the input box: it and what follows are chrome.
        prompts = [i for i, line in enumerate(lines) if line.lstrip().startswith(COMPOSER)]
        if prompts:
            lines = lines[: prompts[-1]]
        lines = [BULLET.sub(r"\1  ", line) for line in lines if not PROGRESS.search(line)]
        return clean_message("\n".join(lines), "", FOOTER)
