"""Agent types the platform runs, by canonical name and alias, and their adapters."""

from __future__ import annotations

from workers.agents.base import AgentAdapter

AGENT_TYPES = ("claude", "ccrouter", "codex", "gemini", "aider", "goose", "droid", "custom")
ALIASES = {"ccr": "ccrouter", "claude-code": "claude"}


class AdapterUnavailable(LookupError):
    """A known agent type whose adapter this deployment cannot run."""


def canonical_agent_type(name: str) -> str:
    """The canonical agent type for a name or alias; ValueError names the accepted ones."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in AGENT_TYPES:
        accepted = ", ".join([*AGENT_TYPES, *ALIASES])
        raise ValueError(f"unknown agent type {name!r}; expected one of: {accepted}")
    return key


def get_adapter(name: str) -> AgentAdapter:
    agent_type = canonical_agent_type(name)
    if agent_type == "custom":
        from workers.agents.custom import CustomAdapter

        return CustomAdapter()
    if agent_type == "claude":
        from workers.agents.claude import ClaudeAdapter

        return ClaudeAdapter()
    raise AdapterUnavailable(f"the {agent_type} adapter is not available on this platform yet")
