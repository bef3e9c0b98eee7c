"""The agent types the platform offers, by canonical name and alias.

Pure data the ingress validates requests against and the sessions worker picks adapters by
(``workers.agents``): one list, below both.
"""

from __future__ import annotations

AGENT_TYPES = ("claude", "ccrouter", "codex", "gemini", "aider", "goose", "droid", "custom")
ALIASES = {"ccr": "ccrouter", "claude-code": "claude", "factory": "droid"}


def canonical_agent_type(name: str) -> str:
    """The canonical agent type for a name or alias; ValueError names the accepted ones."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in AGENT_TYPES:
        accepted = ", ".join([*AGENT_TYPES, *ALIASES])
        raise ValueError(f"unknown agent type {name!r}; expected one of: {accepted}")
    return key
