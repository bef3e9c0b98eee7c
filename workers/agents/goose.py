"""``goose``: Block's goose CLI (a Rust binary from its own releases, not on npm or PyPI), ``goose
session`` in the PTY.

Not installed by this repo: ``AGENTAPI_GOOSE_BIN`` or ``goose`` on PATH. The provider is goose's
``openai`` provider pointed at the deployment's OpenAI-compatible endpoint through the documented
variables (``GOOSE_PROVIDER``, ``GOOSE_MODEL``, ``OPENAI_HOST``, ``OPENAI_BASE_PATH``, key in
``OPENAI_API_KEY``; ``GOOSE_DISABLE_KEYRING`` since a PTY host has no desktop keyring). The
``$HOME/.config/goose/config.yaml`` enables the developer extension and names the MCP gateway as a
``streamable_http`` extension with its bearer header; ``GOOSE_MODE: smart_approve`` asks before
file changes. The system prompt is the global hints file ``~/.config/goose/.goosehints``, which
goose adds to its own prompt. ``goose session --resume`` on recovery.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import yaml

from services.agents.binaries import agent_binary
from workers.agents.base import AutoResponse, LaunchContext
from workers.agents.custom import write_private
from workers.agents.formatting import clean_message
from workers.agents.gateway import gateway_headers

# The empty prompt "( O)>" (goose's eyes; its hint greyed after it) and the context-usage line.
ECHO_PROMPT = re.compile(r"^(\s*)\(\s*[Oo]\)>\s?")
FOOTER = re.compile(r"^\s*\(\s*[Oo]\)>\s*(Press Enter to send\b.*)?$|^\s*Context: [○●◐◔◕ ]+\d+%")


def goose_config_dir(ctx: LaunchContext) -> Path:
    return ctx.home / ".config" / "goose"


def openai_host_and_path(base_url: str) -> tuple[str, str]:
    """goose's OPENAI_HOST and OPENAI_BASE_PATH for an SDK-style base URL such as ``https://h/v1``."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}", f"{parts.path.strip('/')}/chat/completions".lstrip("/")


class GooseAdapter:
    name: ClassVar[str] = "goose"
    aliases: ClassVar[tuple[str, ...]] = ()
    bracketed_paste: ClassVar[bool] = True
    # goose stops the running request on Ctrl-C (Esc does nothing there).
    interrupt_keys: ClassVar[bytes] = b"\x03"
    paste_enter_delay: ClassVar[float] = 0.1
    auto_responses: ClassVar[tuple[AutoResponse, ...]] = ()

    def prepare(self, ctx: LaunchContext) -> None:
        extensions: dict[str, Any] = {
            "developer": {
                "type": "builtin",
                "name": "developer",
                "enabled": True,
                "bundled": True,
                "timeout": 300,
            }
        }
        if ctx.mcp_gateway_url:
            extensions["agentapi"] = {
                "type": "streamable_http",
                "name": "agentapi",
                "description": "agentapi MCP gateway",
                "enabled": True,
                "uri": ctx.mcp_gateway_url,
                "headers": gateway_headers(ctx),
                "envs": {},
                "env_keys": [],
                "timeout": 300,
            }
        config = {"GOOSE_MODE": "smart_approve", "GOOSE_TELEMETRY_ENABLED": False, "extensions": extensions}
        write_private(goose_config_dir(ctx) / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        if ctx.system_prompt:
            write_private(goose_config_dir(ctx) / ".goosehints", ctx.system_prompt)

    def command(self, ctx: LaunchContext) -> list[str]:
        argv = [agent_binary("goose"), "session"]
        if ctx.resume:
            argv.append("--resume")
        return argv

    def environment(self, ctx: LaunchContext) -> dict[str, str]:
        env = {"GOOSE_DISABLE_KEYRING": "1", "GOOSE_CLI_THEME": "ansi"}
        if ctx.agent_env.get("OPENAI_BASE_URL") or ctx.agent_env.get("OPENAI_API_KEY"):
            env["GOOSE_PROVIDER"] = "openai"
        if ctx.agent_env.get("OPENAI_BASE_URL"):
            env["OPENAI_HOST"], env["OPENAI_BASE_PATH"] = openai_host_and_path(
                ctx.agent_env["OPENAI_BASE_URL"]
            )
        if ctx.agent_env.get("OPENAI_MODEL"):
            env["GOOSE_MODEL"] = ctx.agent_env["OPENAI_MODEL"]
        if ctx.agent_env.get("OPENAI_API_KEY"):
            env["OPENAI_API_KEY"] = ctx.agent_env["OPENAI_API_KEY"]
        return env

    def format_message(self, screen: str, user_input: str) -> str:
        lines = [line for line in screen.splitlines() if not FOOTER.search(line)]
        # The echo follows goose's own prompt, which drop_echo does not know.
        lines = [ECHO_PROMPT.sub(r"\1> ", line) for line in lines]
        return clean_message("\n".join(lines), user_input)
