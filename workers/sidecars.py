"""Helper processes an agent needs beside its PTY for the session's lifetime (Claude Code Router's
server): started before the agent, ready once their port answers, killed with the session.

Each runs in a process group of its own with the agent's rlimits, and dies with its host even when
the host is killed -9 (like the agent: PR_SET_PDEATHSIG), so a recovered session never finds a stale one.
Sandboxed, it listens inside its own network namespace: readiness is checked there, and the agent
reaches it only through the forward its own sandbox is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from workers.agents.base import Sidecar
from workers.pty_session import ResourceLimits, die_with_parent
from workers.sandbox import Sandbox


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SidecarProcess:
    def __init__(self, spec: Sidecar, sandbox: Sandbox | None = None) -> None:
        self.spec = spec
        self.sandbox = sandbox
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(
        self, cwd: Path, env: dict[str, str], limits: ResourceLimits, timeout: float = 30.0
    ) -> None:
        host_pid = os.getpid()

        def in_child() -> None:
            die_with_parent(host_pid)
            limits.apply()

        argv = self.sandbox.wrap(self.spec.argv, cwd) if self.sandbox else self.spec.argv
        log_file = open(cwd / f".{self.spec.name}.log", "ab")  # noqa: ASYNC230 - closed below
        try:
            self._proc = subprocess.Popen(  # noqa: ASYNC220 - short fork/exec
                argv,
                cwd=cwd,
                env={**env, **self.spec.env},
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=in_child,
                close_fds=True,
                pass_fds=self.sandbox.pass_fds if self.sandbox else (),
            )
        finally:
            log_file.close()
        if self.sandbox:
            try:
                await self.sandbox.attach()
            except BaseException:
                await self.stop()
                raise
        deadline = time.monotonic() + timeout
        while not await self._answers():
            if self._proc.poll() is not None:
                raise OSError(f"{self.spec.name} exited with {self._proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                await self.stop()
                raise OSError(
                    f"{self.spec.name} did not answer on port {self.spec.port} within {timeout:.0f} s"
                )
            await asyncio.sleep(0.1)

    async def _answers(self) -> bool:
        try:
            if self.sandbox:
                _, writer = await self.sandbox.open_connection(self.spec.port)
            else:
                _, writer = await asyncio.open_connection("127.0.0.1", self.spec.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def stop(self, grace: float = 3.0) -> None:
        proc = self._proc
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            deadline = time.monotonic() + wait
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is not None:
                break
        self._proc = None
