"""``claude``: Claude Code (npm @anthropic-ai/claude-code), interactive TUI in the PTY.

Verified with Claude Code 2.1.197 against a local fake Messages API: with ``hasCompletedOnboarding``,
the workspace's ``hasTrustDialogAccepted`` and the API key's last 20 characters in
``customApiKeyResponses.approved`` seeded in ``$HOME/.claude.json``, it starts straight at its
prompt with no dialog and no call other than ``POST /v1/messages`` (with
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar

from services.agents.binaries import agent_binary, repo_bin
from workers.agents.base import AutoResponse, ErrorScreen, LaunchContext
from workers.agents.custom import write_private
from workers.agents.formatting import clean_message

REPO_BIN = repo_bin("claude")
PASSED_THROUGH = ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_MODEL")
# Hints around the input box, and the tip Claude Code shows under its spinner while it works.
FOOTER = re.compile(r"\? for shortcuts|esc to interrupt|/effort|← for agents|ctrl\+[a-z] to |^\s*⎿\s+Tip: ")
# Progress lines: a spinner glyph, a word, then "…" or "for 3s" ("✻ Baked for 0s", "✶ Thinking…").
SPINNER = re.compile(r"^\s*[✻✶✳✢✽·*]\s+\S+.*(…|for \d+(\.\d+)?[ms]s?\b|\(esc to interrupt)")
BULLET = re.compile(r"^(\s*)[●⏺]\s")
# Claude Code 2.1's failure lines (tests/agents/golden/claude/errors): the spinner line while it
# retries ("✻ API error · Retrying in 12s · attempt 7/10", "✻ Unable to connect to API
# (ConnectionRefused) · Retrying in …", "✻ Rate limited · …"), and the reply it gives instead of one
# ("⎿  Not logged in · Please run /login", "⎿  API Error: 500 …").
SPINNER_GLYPHS = "✻✶✳✢✽·*"
ERROR_SCREENS = (
    ErrorScreen(re.compile(r"^\s*⎿\s+.*Please run /login"), "not_logged_in", "error"),
    ErrorScreen(
        re.compile(rf"^\s*[{SPINNER_GLYPHS}]\s+(Rate limited|API overloaded).* · Retrying in "),
        "rate_limited",
        "warning",
    ),
    ErrorScreen(
        re.compile(rf"^\s*[{SPINNER_GLYPHS}]\s+.* · Retrying in \d+\w* · attempt "), "api_error", "warning"
    ),
    ErrorScreen(re.compile(r"^\s*⎿\s+API Error:? .*(429|rate_limit|[Rr]ate limit)"), "rate_limited", "error"),
    ErrorScreen(re.compile(r"^\s*⎿\s+API Error"), "api_error", "error"),
)


def claude_binary() -> str:
    return agent_binary("claude")


class ClaudeAdapter:
    name: ClassVar[str] = "claude"
    aliases: ClassVar[tuple[str, ...]] = ("claude-code",)
    bracketed_paste: ClassVar[bool] = True
    paste_enter_delay: ClassVar[float] = 0.1
    auto_responses: ClassVar[tuple[AutoResponse, ...]] = ()
    error_screens: ClassVar[tuple[ErrorScreen, ...]] = ERROR_SCREENS

    def prepare(self, ctx: LaunchContext) -> None:
        state: dict[str, object] = {
            "hasCompletedOnboarding": True,
            "theme": "dark",
            "projects": {
                str(ctx.workspace): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}
            },
        }
        key = ctx.agent_env.get("ANTHROPIC_API_KEY")
        if key:
            state["customApiKeyResponses"] = {"approved": [key[-20:]], "rejected": []}
        write_private(ctx.home / ".claude.json", json.dumps(state))
        if ctx.mcp_gateway_url:
            gateway = {
                "type": "http",
                "url": ctx.mcp_gateway_url,
                "headers": {"Authorization": f"Bearer {ctx.mcp_gateway_token}"},
            }
            write_private(self._mcp_config(ctx), json.dumps({"mcpServers": {"agentapi": gateway}}))

    @staticmethod
    def _mcp_config(ctx: LaunchContext) -> Path:
        return ctx.home / ".agentapi" / "mcp.json"

    def command(self, ctx: LaunchContext) -> list[str]:
        argv = [claude_binary()]
        if ctx.system_prompt:
            argv += ["--append-system-prompt", ctx.system_prompt]
        if ctx.mcp_gateway_url:
            argv += ["--mcp-config", str(self._mcp_config(ctx)), "--strict-mcp-config"]
        if ctx.resume:
            argv.append("--continue")
        return argv

    def acp_command(self, ctx: LaunchContext) -> list[str]:
        """Claude Code over ACP (npm @zed-industries/claude-code-acp, which bundles its own Claude
        Code through the Agent SDK): the gateway and the workspace come with session/new."""
        return [agent_binary("claude-code-acp")]

    def acp_session_meta(self, ctx: LaunchContext) -> dict[str, object]:
        """claude-code-acp appends ``_meta.systemPrompt.append`` to Claude Code's own system prompt."""
        return {"systemPrompt": {"append": ctx.system_prompt}} if ctx.system_prompt else {}

    def environment(self, ctx: LaunchContext) -> dict[str, str]:
        env = {key: ctx.agent_env[key] for key in PASSED_THROUGH if key in ctx.agent_env}
        env.update({"DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"})
        return env

    def format_message(self, screen: str, user_input: str) -> str:
        lines = [line for line in screen.splitlines() if not SPINNER.search(line) and line.strip() != "❯"]  # noqa: RUF001
        # The bullet becomes indentation, so its hanging continuation lines dedent with it.
        lines = [BULLET.sub(r"\1  ", line) for line in lines]
        return clean_message("\n".join(lines), user_input, FOOTER)
