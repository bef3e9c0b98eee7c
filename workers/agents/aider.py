"""``aider``: Aider (PyPI aider-chat), its prompt_toolkit chat in the PTY.

Not installed by this repo (it pins most of its dependencies, so it belongs in its own virtualenv or
image layer): ``AGENTAPI_AIDER_BIN`` or ``aider`` on PATH. Everything is on the command line:
the deployment's OpenAI-compatible endpoint and model (``--openai-api-base``, ``--model
openai/<name>``; the key stays in ``OPENAI_API_KEY``), ``--yes-always`` so no confirmation stalls a
turn, no auto-commits, no update check, analytics or release notes, and the chat and input
histories kept in the session's HOME rather than the workspace. The system prompt is a read-only
conventions file (``--read``). Aider has no MCP client, so the gateway is not handed to it.
``--restore-chat-history`` on recovery.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from services.agents.binaries import agent_binary
from workers.agents.base import AutoResponse, LaunchContext
from workers.agents.custom import write_private
from workers.agents.formatting import clean_message

# The start-up banner: "Aider v0.86.2", then "Model: …", "Git repo: …", "Repo-map: …", files added.
BANNER = re.compile(r"^Aider v\d")
BANNER_LINE = re.compile(
    r"^(Aider v\d|(Main |Weak |Editor )?[Mm]odel: |Git repo: |Repo-map: |Added .* to the chat)"
)
# "Tokens: 8.6k sent, 59 received. Cost: …" closes each answer; the files in the chat and the
# prompt (">", "multi>", "ask>") follow.
FOOTER = re.compile(
    r"^Tokens: \S+ sent, \S+ received\b|^(Readonly|Editable|Read-only): |^\s*(multi|architect|ask|code)?>\s*$"
)


def aider_dir(ctx: LaunchContext) -> Path:
    return ctx.home / ".aider"


class AiderAdapter:
    name: ClassVar[str] = "aider"
    aliases: ClassVar[tuple[str, ...]] = ()
    # Aider's prompt_toolkit input takes a bracketed paste as one multi-line message.
    bracketed_paste: ClassVar[bool] = True
    # Its prompt_toolkit input stops the running request on Ctrl-C.
    interrupt_keys: ClassVar[bytes] = b"\x03"
    paste_enter_delay: ClassVar[float] = 0.1
    auto_responses: ClassVar[tuple[AutoResponse, ...]] = ()

    def prepare(self, ctx: LaunchContext) -> None:
        aider_dir(ctx).mkdir(mode=0o700, parents=True, exist_ok=True)
        if ctx.system_prompt:
            write_private(aider_dir(ctx) / "CONVENTIONS.md", ctx.system_prompt)

    def command(self, ctx: LaunchContext) -> list[str]:
        argv = [
            agent_binary("aider"),
            "--yes-always",
            "--no-auto-commits",
            "--no-gitignore",
            "--no-check-update",
            "--no-show-release-notes",
            "--analytics-disable",
            "--no-show-model-warnings",
            "--chat-history-file",
            str(aider_dir(ctx) / "chat.history.md"),
            "--input-history-file",
            str(aider_dir(ctx) / "input.history"),
        ]
        if ctx.agent_env.get("OPENAI_BASE_URL"):
            argv += ["--openai-api-base", ctx.agent_env["OPENAI_BASE_URL"]]
        if ctx.agent_env.get("OPENAI_MODEL"):
            argv += ["--model", f"openai/{ctx.agent_env['OPENAI_MODEL']}"]
        if ctx.system_prompt:
            argv += ["--read", str(aider_dir(ctx) / "CONVENTIONS.md")]
        if ctx.resume:
            argv.append("--restore-chat-history")
        return argv

    def environment(self, ctx: LaunchContext) -> dict[str, str]:
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        if "OPENAI_API_KEY" in ctx.agent_env:
            env["OPENAI_API_KEY"] = ctx.agent_env["OPENAI_API_KEY"]
        return env

    def format_message(self, screen: str, user_input: str) -> str:
        lines = screen.splitlines()
        starts = [i for i, line in enumerate(lines) if BANNER.match(line)]
        if user_input and starts:
            # Aider is still for a few seconds while it loads litellm, so a first message can be
            # typed before its prompt shows; it reads it once started and answers below its banner.
            lines = lines[starts[-1] :]
            while lines and BANNER_LINE.match(lines[0]):
                lines = lines[1:]
        return clean_message("\n".join(lines), user_input, FOOTER)
