"""The contract between the PTY host and an agent CLI.

The PTY host knows nothing of any agent; an adapter knows nothing of Redis or the database. An
adapter says how to start its CLI, what environment and files it needs, how the system prompt and
the MCP gateway reach it, which start-up dialogs to answer, and how to turn its screen into text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol
from uuid import UUID


@dataclass(frozen=True)
class LaunchContext:
    session_id: UUID
    org_id: UUID
    user_id: UUID
    workspace: Path
    # The agent's HOME, inside the workspace, so CLIs keep their state per session.
    home: Path
    system_prompt: str = ""
    mcp_gateway_url: str | None = None
    mcp_gateway_token: str | None = None
    # True when a recovered host restarts the agent and the CLI should resume its conversation.
    resume: bool = False
    # Variables the platform hands this agent (model endpoint, provider key, model name).
    agent_env: dict[str, str] = field(default_factory=dict)
    # For `custom`: the admin-allowlisted command line.
    custom_command: tuple[str, ...] = ()
    # The organization's tenant settings and opened secrets, only for adapters that declare
    # ``uses_tenant_settings`` (ccrouter): they go into the session's private files, never its env.
    tenant_settings: dict[str, Any] = field(default_factory=dict)
    tenant_secrets: dict[str, str] = field(default_factory=dict)
    # Where a session's helper processes keep files the agent must not read (a router's config with
    # provider keys): outside the workspace and every agent mount, removed when the session ends.
    private: Path | None = None


@dataclass(frozen=True)
class AutoResponse:
    """A start-up dialog the adapter answers by itself (onboarding, trust this folder, ...)."""

    pattern: re.Pattern[str]
    keys: bytes
    # Answer at most this many times per process, so a misread screen cannot loop forever.
    limit: int = 1


@dataclass(frozen=True)
class Sidecar:
    """A helper process the agent needs for its lifetime (a local model router)."""

    name: str
    argv: list[str]
    # Ready when something accepts connections on 127.0.0.1 at this port.
    port: int
    env: dict[str, str] = field(default_factory=dict)
    # Its working directory and only writable path (the session's private directory).
    home: Path | None = None
    # URLs it must reach; nothing else is forwarded into its sandbox. ``endpoints`` are the platform's
    # (trusted as configured); ``tenant_endpoints`` a tenant's (a router's providers), egress-checked
    # at every connection, which goes to the address the check vetted.
    endpoints: tuple[str, ...] = ()
    tenant_endpoints: tuple[str, ...] = ()


_DIGITS = re.compile(r"\d+")
# A spinner glyph, tree corner or error mark a TUI draws before the line's text.
_LEAD = re.compile(r"^[\s✻✶✳✢✽·*⎿└■●⏺✕✖×!]+")  # noqa: RUF001

ErrorKind = Literal["not_logged_in", "api_error", "rate_limited", "crashed"]


@dataclass(frozen=True)
class ErrorScreen:
    """A failure its CLI shows on screen instead of a reply: the line that says so."""

    pattern: re.Pattern[str]
    kind: ErrorKind
    # "warning" while the CLI retries by itself, "error" when it has given up.
    level: Literal["warning", "error"]


@dataclass(frozen=True)
class AgentError:
    """coder/agentapi's ``agent_error``: what the agent's screen says went wrong."""

    kind: ErrorKind
    level: Literal["warning", "error"]
    message: str

    @property
    def key(self) -> str:
        """The same failure with another countdown or attempt number is the same error."""
        return f"{self.kind}:{_DIGITS.sub('#', self.message)}"


def recognise_error(adapter: AgentAdapter, screen: str) -> AgentError | None:
    """The last failure line on ``screen`` that the adapter's ``error_screens`` know, if any."""
    rules: tuple[ErrorScreen, ...] = getattr(adapter, "error_screens", ())
    for line in reversed(screen.splitlines()):
        for rule in rules:
            if rule.pattern.search(line):
                return AgentError(rule.kind, rule.level, _LEAD.sub("", line).strip())
    return None


class AgentAdapter(Protocol):
    """Optional beyond this protocol: ``uses_tenant_settings: ClassVar[bool]`` (fill the context's
    tenant settings and secrets), ``sidecars(ctx) -> list[Sidecar]`` (started before the agent,
    stopped with the session), ``interrupt_keys: ClassVar[bytes]`` (see :func:`interrupt_keys`),
    ``error_screens: ClassVar[tuple[ErrorScreen, ...]]`` (see :func:`recognise_error`) and
    ``ready_marker: ClassVar[str]`` (text its screen shows once it takes input; see
    ``workers.screen_tracker.ScreenTracker``).
    Agent types that also speak the Agent Client Protocol add
    ``acp_command(ctx) -> list[str]`` and ``acp_session_meta(ctx) -> dict`` (``_meta`` for
    session/new, e.g. the system prompt), and ``acp_environment(ctx)`` where ACP needs other
    variables than the PTY."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]]
    # Whether user input is wrapped in bracketed paste before the Enter key.
    bracketed_paste: ClassVar[bool]
    # Seconds from the paste to the Enter key: some TUIs take an Enter that follows a paste closely
    # as a newline in the text instead of a submit (Gemini CLI: within 40 ms).
    paste_enter_delay: ClassVar[float]
    auto_responses: ClassVar[tuple[AutoResponse, ...]]

    def prepare(self, ctx: LaunchContext) -> None:
        """Write the files the CLI reads (config, MCP gateway entry, system prompt) under ctx."""

    def command(self, ctx: LaunchContext) -> list[str]:
        """The argv to exec; never run through a shell."""

    def environment(self, ctx: LaunchContext) -> dict[str, str]:
        """Variables added to the host's scrubbed base environment (PATH, HOME, TERM, LANG)."""

    def format_message(self, screen: str, user_input: str) -> str:
        """The agent's reply from the screen lines that appeared after the input: echo and chrome removed."""


ESCAPE = b"\x1b"


def interrupt_keys(adapter: AgentAdapter) -> bytes:
    """The keys that stop the agent's current work: Esc for the TUIs that say "esc to interrupt"
    (Claude Code, Codex, Gemini CLI, Droid), unless the adapter names its own (Ctrl-C for Aider)."""
    return bytes(getattr(adapter, "interrupt_keys", ESCAPE))
