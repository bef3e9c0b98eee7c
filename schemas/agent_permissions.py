"""An organization's policy for the permission requests of agents driven over ACP.

Tenant settings ``agent_permissions`` (admins, PUT /api/v1/settings), all optional::

    {"kinds": {"execute": "deny", "fetch": "allow"}, "outside_workspace": "ask"}

A request names a tool call's kind (ACP's ``read``, ``edit``, ``delete``, ``move``, ``search``,
``execute``, ``think``, ``fetch``, ``switch_mode``, ``other`` — MCP tools are ``other``) and the
files it touches. The decision is ``allow``, ``deny`` or ``ask`` (the API client answers). By
default, work on files inside the workspace is allowed (the sandbox confines it there anyway), and
everything else is asked: commands, fetches, MCP tools, mode switches, and any file outside the
workspace. A kind set to ``deny`` is denied wherever it points; ``outside_workspace`` (``ask`` or
``deny``) applies to kinds that would otherwise be allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SETTINGS_KEY = "agent_permissions"
Decision = Literal["allow", "deny", "ask"]
ToolKind = Literal[
    "read", "edit", "delete", "move", "search", "execute", "think", "fetch", "switch_mode", "other"
]
DEFAULT_KINDS: dict[str, Decision] = {
    "read": "allow",
    "search": "allow",
    "think": "allow",
    "edit": "allow",
    "delete": "allow",
    "move": "allow",
    "execute": "ask",
    "fetch": "ask",
    "switch_mode": "ask",
    "other": "ask",
}


class PermissionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: dict[ToolKind, Decision] = Field(default_factory=dict)
    outside_workspace: Literal["ask", "deny"] = "ask"

    def decide(self, kind: str | None, locations: list[str], workspace: Path) -> Decision:
        decision = self.kinds.get(kind or "other", DEFAULT_KINDS.get(kind or "other", "ask"))  # type: ignore[call-overload]  # an agent may name a kind ACP does not list: it is looked up as a plain string
        if decision == "allow" and not all(_inside(path, workspace) for path in locations):
            return self.outside_workspace
        return decision


def _inside(path: str, workspace: Path) -> bool:
    """Whether ``path`` (relative paths are the agent's, from the workspace) resolves into it; a
    symlink pointing out counts as outside."""
    root = workspace.resolve()
    target = (workspace / path).resolve()
    return target == root or root in target.parents
