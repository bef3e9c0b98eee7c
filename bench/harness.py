"""What every bench shares: a running stack on a fresh database, percentiles, and the results table.

HTTP load comes from `bench/wrk.py` (a C load generator), never from a Python client."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from tests.fixtures.postgres import fresh_database
from tests.fixtures.stack import Stack, running_stack

RESULTS = Path(__file__).parent / "results"
ECHO = {"agent_type": "custom", "custom_agent": "echo"}


@dataclass
class Row:
    bench: str
    figure: str
    value: float
    unit: str
    target: str
    meets: bool | None
    details: dict[str, Any] = field(default_factory=dict)
    # What the same machine did in the same run on the simplest version of the work (a bare
    # Litestar endpoint, raw Redis, a direct MCP call): a figure is read against it.
    anchor: str = ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of seconds, in milliseconds."""
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 2),
        "p95_ms": round(percentile(values, 95) * 1000, 2),
        "p99_ms": round(percentile(values, 99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2) if values else float("nan"),
        "mean_ms": round(statistics.fmean(values) * 1000, 2) if values else float("nan"),
    }


@contextmanager
def _stack(overrides: dict[str, str] | None = None, worker: bool = True) -> Iterator[Stack]:
    """The platform as in the tests: `agentapi serve` + a sessions worker, fresh database, own prefix."""
    quiet = {
        "AGENTAPI_LOG_LEVEL": "WARNING",
        "AGENTAPI_MAX_SESSIONS_PER_USER": "100000",
        "AGENTAPI_MAX_SESSIONS_PER_ORG": "100000",
        "AGENTAPI_AGENT_SETTLE_SECONDS": "0.1",
    }
    with fresh_database() as db, tempfile.TemporaryDirectory(prefix="agentapi-bench-") as scratch:
        with running_stack(
            db, secrets.token_urlsafe(48), Path(scratch), {**quiet, **(overrides or {})}, worker
        ) as s:
            yield s


@asynccontextmanager
async def stack(overrides: dict[str, str] | None = None, worker: bool = True) -> AsyncIterator[Stack]:
    """The stack, set up and torn down off the event loop (both block: migrations, seeding, stops)."""
    manager = _stack(overrides, worker)
    running = await asyncio.to_thread(manager.__enter__)
    try:
        yield running
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


async def start_echo(client: httpx.AsyncClient, stack: Stack, headers: dict[str, str]) -> str:
    """A new echo session, once its agent is stable."""
    created = await create_echo(client, headers)
    await until_stable(client, created["events_url"], headers)
    return str(created["id"])


async def create_echo(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    """A new echo session as POST /sessions answered it (its agent not yet started)."""
    return dict((await client.post("/api/v1/sessions", json=ECHO, headers=headers)).json())


async def until_stable(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        async for sse in source.aiter_sse():
            if sse.event == "status_change" and json.loads(sse.data)["status"] == "stable":
                return


def cpu_seconds(pid: int) -> tuple[float, float]:
    """The process's user and system CPU so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def write(rows: list[Row]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    (RESULTS / "latest.json").write_text(path.read_text())
    return path


def table(rows: list[Row]) -> str:
    lines = ["| bench | figure | value | anchor (same run) | target | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        meets = "—" if r.meets is None else ("yes" if r.meets else "**no**")
        value = "not measured" if r.value != r.value else f"{r.value:g} {r.unit}"
        lines.append(f"| {r.bench} | {r.figure} | {value} | {r.anchor or '—'} | {r.target} | {meets} |")
    return "\n".join(lines)
