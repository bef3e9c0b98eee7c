"""The adapters of the agent types the platform runs (``services.agents`` lists the types)."""

from __future__ import annotations

import importlib

from services.agents import canonical_agent_type
from workers.agents.base import AgentAdapter

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


def get_adapter(name: str) -> AgentAdapter:
    agent_type = canonical_agent_type(name)
    target = ADAPTERS.get(agent_type)
    if target is None:
        raise AdapterUnavailable(f"the {agent_type} adapter is not available on this platform yet")
    module, cls = target.split(":")
    adapter: AgentAdapter = getattr(importlib.import_module(module), cls)()
    return adapter
