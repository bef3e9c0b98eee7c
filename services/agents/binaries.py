"""Where an agent CLI's executable is: an operator's override, the repo's npm install, or PATH."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

NODE_BIN = Path(__file__).resolve().parents[2] / "node_modules" / ".bin"


def repo_bin(name: str) -> Path:
    """The executable ``npm ci`` installs for this repo (package.json lists the agent CLIs)."""
    return NODE_BIN / name


def agent_binary(name: str) -> str:
    """``AGENTAPI_<NAME>_BIN``, else ``node_modules/.bin/<name>``, else ``<name>`` on PATH.

    A CLI found nowhere is returned by its bare name, so the launch fails with a clear "not found".
    """
    override = os.environ.get(f"AGENTAPI_{name.upper()}_BIN")
    if override:
        return override
    local = repo_bin(name)
    if local.exists():
        return str(local)
    return shutil.which(name) or name
