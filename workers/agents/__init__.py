"""Agent types the platform runs, by canonical name and alias, and their adapters."""

from __future__ import annotations

import importlib

from workers.agents.base import AgentAdapter

AGENT_TYPES = ("claude", "ccrouter", "codex", "gemini", "aider", "goose", "droid", "custom")
ALIASES = {"ccr": "ccrouter", "claude-code": "claude", "factory": "droid"}
# Adapter classes by agent type, imported on first use.
ADAPTERS = {
    "claude": "workers.agents.claude:ClaudeAdapter",
    "ccrouter": "workers.agents.ccrouter:CCRouterAdapter",
    "codex": "workers.agents.codex:CodexAdapter",
    "gemini": "workers.agents.gemini:GeminiAdapter",
    "aider": "workers.agents.aider:AiderAdapter",
    "goose": "workers.agents.goose:GooseAdapter",
    "droid": "workers.agents.droid:DroidAdapter",
    "custom": "workers.agents.custom:CustomAdapter",
}


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
    target = ADAPTERS.get(agent_type)
    if target is None:
        raise AdapterUnavailable(f"the {agent_type} adapter is not available on this platform yet")
    module, cls = target.split(":")
    adapter: AgentAdapter = getattr(importlib.import_module(module), cls)()
    return adapter
