"""Whether tenant processes can be sandboxed on this machine (bubblewrap + setpriv, namespaces,
a uid switch): asked by the sessions and tools workers before they start a tenant's process, and by
``/ready``, which reports the sandbox unavailable rather than pretending."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache

# Sandbox uids live far above any system or login account (workers/sandbox.py derives them).
UID_BASE = 0x2000_0000


class SandboxUnavailable(OSError):
    """The sandbox cannot be set up here; the message names what is missing."""


def require_tools() -> tuple[str, str]:
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if not bwrap:
        raise SandboxUnavailable("bwrap (bubblewrap) is not installed")
    if not setpriv:
        raise SandboxUnavailable("setpriv (util-linux) is not installed")
    return bwrap, setpriv


@lru_cache(maxsize=1)
def probe() -> str | None:
    """None when a sandbox can be set up on this machine, else what is missing (cached)."""
    try:
        bwrap, setpriv = require_tools()
    except SandboxUnavailable as exc:
        return str(exc)
    argv = [bwrap, "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "--proc", "/proc", "--",
            setpriv, f"--reuid={UID_BASE}", f"--regid={UID_BASE}", "--clear-groups", "--no-new-privs",
            "--", "true"]  # fmt: skip
    try:
        result = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {exc}"
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
        return f"bwrap cannot create namespaces or switch uid here ({detail}); the worker needs root or CAP_SYS_ADMIN"
    return None
