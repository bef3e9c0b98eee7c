"""What the sandbox adds to a session's start: the echo agent spawned in a PTY until its first
screen, unconfined and sandboxed (bwrap, setpriv, PID + network namespaces, two forwarded ports,
the workspace handed to its uid), alternated in one run so both see the same machine load."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Row, summary_ms
from workers.pty_session import PtySession
from workers.sandbox import Endpoint, Sandbox, give_to, sandbox_uid

ECHO_AGENT = Path(__file__).resolve().parents[1] / "tests" / "agents" / "echo_agent.py"


async def first_screen(workspace: Path, sandboxed: bool, index: int) -> float:
    sandbox = None
    started = time.perf_counter()
    if sandboxed:
        uid = sandbox_uid(f"bench-{index}")
        await asyncio.to_thread(give_to, workspace, uid)
        # A model endpoint and the gateway, as a real session has.
        endpoints = (Endpoint("127.0.0.1", 9), Endpoint("127.0.0.1", 10))
        sandbox = Sandbox("agent", uid, workspace.parent / f"etc-{index}", (workspace,), endpoints=endpoints)
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(workspace), "TERM": "xterm-256color"}
    pty = PtySession([sys.executable, str(ECHO_AGENT)], cwd=workspace, env=env, sandbox=sandbox)
    await pty.start()
    while "Echo Agent" not in pty.snapshot():
        await pty.activity.wait()
        pty.activity.clear()
    took = time.perf_counter() - started
    await pty.terminate(grace=0.5)
    if sandbox:
        await sandbox.close()
    return took


async def bench(quick: bool) -> list[Row]:
    count = 15 if quick else 60
    samples: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(count):
            for sandboxed in (False, True):
                workspace = Path(scratch) / f"ws-{index}-{int(sandboxed)}"
                workspace.mkdir(mode=0o700)
                samples[sandboxed].append(await first_screen(workspace, sandboxed, index))
    bare, boxed = summary_ms(samples[False]), summary_ms(samples[True])
    added_p50, added_p95 = boxed["p50_ms"] - bare["p50_ms"], boxed["p95_ms"] - bare["p95_ms"]
    details = {"unconfined": bare, "sandboxed": boxed, "added_p50_ms": round(added_p50, 2)}
    return [
        Row(
            "sandbox",
            "agent spawn → first screen, added p95",
            round(added_p95, 2),
            "ms",
            "<= 50 ms",
            added_p95 <= 50,
            details,
        )
    ]
