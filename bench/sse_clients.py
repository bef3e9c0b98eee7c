"""The fan-out bench's subscribers: `sse_clients.c`, one epoll loop in C holding every SSE stream.

Python subscribers (bare asyncio sockets over 4 processes) spent as much CPU per delivery as the
ingress, on the same 2 cores, so the bench measured the two together. The C program is built with
the machine's C compiler into a cache directory, once per version of its source; without a compiler
the bench stops and says how to install one, as the HTTP benches do for wrk. Like wrk, it runs
pinned to the last core."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.wrk import pinned

SOURCE = Path(__file__).with_name("sse_clients.c")
INSTALL_HINT = "install a C compiler (Debian: apt-get install gcc) to run the fan-out bench"
# The result line holds one timestamp per stream: ~18 bytes each, past asyncio's 64 KiB line limit.
LINE_LIMIT = 1 << 24


class CompilerMissing(SystemExit):
    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agentapi-bench"


def binary() -> Path:
    """The compiled client, built on first use of this version of the source."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise CompilerMissing()
    source = SOURCE.read_bytes()
    built = _cache() / f"sse_clients-{hashlib.sha256(source).hexdigest()[:16]}"
    if not built.exists():
        built.parent.mkdir(parents=True, exist_ok=True)
        partial = built.with_name(f"{built.name}.{os.getpid()}.tmp")
        subprocess.run(
            [compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(partial), str(SOURCE)], check=True
        )
        partial.replace(built)  # atomic: a concurrent bench never runs a half-written binary
    return built


@dataclass
class Outcome:
    received: list[float]  # CLOCK_REALTIME (time.time()) of each stream's receipt of the reply
    failures: dict[str, int]
    retries: dict[str, int]


class Subscribers:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    async def _line(self, timeout: float) -> bytes:
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"sse_clients exited with {await self._process.wait()}")
        return line

    async def connected(self, timeout: float = 120) -> int:
        """How many streams answered 200, once every one has answered or failed for good."""
        return int((await self._line(timeout)).removeprefix(b"READY "))

    async def outcome(self, timeout: float = 150) -> Outcome:
        """Once every stream has the reply or failed, or the client's deadline passed."""
        raw = json.loads(await self._line(timeout))
        return Outcome(raw["received"], raw["failures"], raw["retries"])


@asynccontextmanager
async def subscribers(
    url: str, headers: dict[str, str], count: int, marker: str, *, attempts: int = 4, deadline: float = 110
) -> AsyncIterator[Subscribers]:
    """``count`` SSE streams of ``url`` waiting for the agent's reply with ``marker``; each reconnects
    after a failure (honouring Retry-After) up to ``attempts`` times. They hang up on leaving."""
    target = httpx.URL(url)
    command = [
        str(binary()),
        f"-a{attempts}",
        f"-t{deadline}",
        str(target.host),
        str(target.port),
        target.raw_path.decode(),
        str(count),
        marker,
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    process = await asyncio.create_subprocess_exec(
        *pinned(command), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=LINE_LIMIT
    )
    try:
        yield Subscribers(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
