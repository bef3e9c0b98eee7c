"""What each agent type needs to run on a deployment: its CLI binaries and the settings it reads.

The console's agent picker and ``GET /api/v1/agents`` read this; the adapters stay the authority on
how a CLI is started. Installed means every binary resolves the way the sessions worker resolves it
(``AGENTAPI_<NAME>_BIN``, ``node_modules/.bin``, PATH) on this host: the ingress and the workers run
the same image, so the ingress's view is the workers'.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

from schemas.settings import Settings
from services.agents import AGENT_TYPES, ALIASES
from services.agents.binaries import agent_binary


@dataclass(frozen=True)
class AgentSpec:
    label: str
    # CLIs the sessions worker starts for this type (Claude Code Router starts Claude Code too).
    binaries: tuple[str, ...]
    # Settings fields of which at least one must be set: the model provider's key.
    needs_one_of: tuple[str, ...] = ()
    # A tenant-settings section an admin must fill in (PUT /api/v1/settings).
    tenant_section: str | None = None
    # The CLI started instead when the type runs over the Agent Client Protocol.
    acp_binary: str | None = None


SPECS: dict[str, AgentSpec] = {
    "claude": AgentSpec("Claude Code", ("claude",), ("anthropic_api_key",), acp_binary="claude-code-acp"),
    "ccrouter": AgentSpec("Claude Code Router", ("ccr", "claude"), tenant_section="ccrouter"),
    "codex": AgentSpec("Codex CLI", ("codex",), ("openai_api_key",), acp_binary="codex-acp"),
    "gemini": AgentSpec("Gemini CLI", ("gemini",), ("gemini_api_key",), acp_binary="gemini"),
    "aider": AgentSpec("Aider", ("aider",), ("openai_api_key",)),
    "goose": AgentSpec("goose", ("goose",), ("openai_api_key",)),
    "droid": AgentSpec("Factory Droid", ("droid",), ("factory_api_key",)),
    "custom": AgentSpec("Custom command", ()),
}


def installed(binary: str) -> bool:
    path = agent_binary(binary)
    if os.path.isabs(path):
        return os.access(path, os.X_OK)
    return shutil.which(path) is not None


def setting_name(field: str) -> str:
    return f"AGENTAPI_{field.upper()}"


def missing_settings(settings: Settings, agent_type: str, tenant_settings: dict[str, Any]) -> list[str]:
    """The settings an agent type still needs here (one of its provider keys, its tenant section,
    for ``custom`` an allowlist): a session of it could only fail without them."""
    spec = SPECS[agent_type]
    needs = []
    if spec.needs_one_of and not any(getattr(settings, field) for field in spec.needs_one_of):
        needs = [setting_name(field) for field in spec.needs_one_of]
    if spec.tenant_section and not tenant_settings.get(spec.tenant_section):
        needs.append(f"tenant settings: {spec.tenant_section}")
    if agent_type == "custom" and not settings.custom_agents:
        needs.append(setting_name("custom_agents"))
    return needs


def describe(settings: Settings, tenant_settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every agent type with whether it can run here: ``installed``, ``configured`` and what is missing."""
    agents = []
    for agent_type in AGENT_TYPES:
        spec = SPECS[agent_type]
        transport = settings.transport_of(agent_type)
        binaries = (spec.acp_binary,) if transport == "acp" and spec.acp_binary else spec.binaries
        needs = missing_settings(settings, agent_type, tenant_settings)
        custom = sorted(settings.custom_agents) if agent_type == "custom" else []
        agents.append(
            {
                "type": agent_type,
                "label": spec.label,
                "aliases": sorted(alias for alias, target in ALIASES.items() if target == agent_type),
                "installed": all(installed(binary) for binary in binaries),
                "transport": transport,
                "configured": not needs,
                "needs": needs,
                "custom_agents": custom,
            }
        )
    return agents
