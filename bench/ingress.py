"""Accepted `POST /sessions/{id}/message` per second (JWT auth, tenancy, rate limits, audit event,
Redis XADD) vs a bare Litestar endpoint and raw Redis XADD, in the same run, with `wrk` at 64
connections for every target.

`raw` messages are measured because they are accepted whatever the agent is doing; a `user` message
is refused (409) unless the agent is stable, which no load generator could keep up with.

The targets take turns in short rounds (bare, one ingress process, two) rather than one long run
each, so a change in the machine's load during the bench (it is shared) reaches all of them alike;
the ratio is of their totals over the same rounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Row, stack, start_echo
from bench.wrk import wrk
from tests.fixtures.stack import Stack, free_port, stop

BODY = json.dumps({"content": "x", "type": "raw"}).encode()
ROUND_SECONDS = 2
WORKER_COUNTS = (1, 2)


@contextmanager
def bare_server() -> Iterator[str]:
    """bench/bare_app.py under one uvicorn process; its URL."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/message"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, json={}, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the bare Litestar app did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        stop(server)


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and its descendants (uvicorn's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure from a target's rounds: the rate over all of them, the median of each percentile."""
    seconds = sum(r["seconds"] for r in runs)
    return {
        "per_second": round(sum(r["ok"] for r in runs) / seconds, 1) if seconds else float("nan"),
        "ok": sum(r["ok"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "seconds": round(seconds, 2),
        **{q: statistics.median(r[q] for r in runs) for q in ("p50_ms", "p95_ms", "p99_ms")},
        "max_ms": max(r["max_ms"] for r in runs),
        "rounds": len(runs),
        "connections": runs[0]["connections"],
        "generator": runs[0]["generator"],
    }


def xadd_rate(requests: int) -> float:
    out = subprocess.run(
        [
            "redis-benchmark",
            "-q",
            "-n",
            str(requests),
            "-c",
            "50",
            "XADD",
            "agentapi-bench:xadd",
            "MAXLEN",
            "~",
            "10000",
            "*",
            "f",
            "v",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    subprocess.run(["redis-cli", "DEL", "agentapi-bench:xadd"], capture_output=True, check=False)
    found = re.findall(r"([\d.]+) requests per second", out)
    return float(found[-1]) if found else float("nan")


async def message_target(s: Stack) -> dict[str, Any]:
    """wrk's arguments for raw messages to a new live echo session of the stack's user."""
    headers = s.headers()
    async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as client:
        session = await start_echo(client, s, headers)
    return {
        "url": f"{s.base_url}/api/v1/sessions/{session}/message",
        "method": "POST",
        "headers": {**headers, "content-type": "application/json"},
        "body": BODY,
    }


async def bench(quick: bool) -> list[Row]:
    rounds = 2 if quick else 5
    load_before = os.getloadavg()
    async with AsyncExitStack() as exits:
        stacks = {
            n: await exits.enter_async_context(stack({"AGENTAPI_WORKERS": str(n)})) for n in WORKER_COUNTS
        }
        targets = {f"platform_{n}": await message_target(s) for n, s in stacks.items()}
        targets["bare"] = {
            "url": exits.enter_context(bare_server()),
            "method": "POST",
            "headers": {"content-type": "application/json"},
            "body": BODY,
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for _ in range(rounds):
            for name, target in targets.items():
                runs[name].append(await asyncio.to_thread(wrk, **target, seconds=ROUND_SECONDS))
        rss = {n: tree_rss_bytes(s.server.pid) for n, s in stacks.items() if s.server is not None}
    load_after = os.getloadavg()
    xadd = xadd_rate(20_000 if quick else 100_000)
    figures = {name: combined(r) for name, r in runs.items()}
    one, bare = figures["platform_1"], figures["bare"]
    ratio = one["per_second"] / bare["per_second"] if bare["per_second"] else float("nan")
    load = f"load average {load_before[0]:.1f} → {load_after[0]:.1f}"
    details = {
        **figures,
        "rss_mb": {n: round(b / 2**20) for n, b in rss.items()},
        "load_average": {"before": load_before, "after": load_after},
        "xadd_per_second": xadd,
    }
    rows = [
        Row(
            "ingress",
            f"POST .../message accepted, one process ({load})",
            one["per_second"],
            "req/s",
            ">= 10000/s",
            one["per_second"] >= 10_000,
            details,
        ),
        Row(
            "ingress",
            f"vs bare Litestar endpoint ({bare['per_second']:g} req/s, same rounds)",
            round(100 * ratio, 1),
            "%",
            ">= 50 %",
            ratio >= 0.5,
        ),
        Row(
            "ingress",
            f"POST .../message p95 at {one['connections']} connections (p50 {one['p50_ms']:g}, "
            f"p99 {one['p99_ms']:g}; bare p95 {bare['p95_ms']:g} ms)",
            one["p95_ms"],
            "ms",
            "< 100 ms",
            one["p95_ms"] < 100,
        ),
    ]
    for n in WORKER_COUNTS[1:]:
        many = figures[f"platform_{n}"]
        rows.append(
            Row(
                "ingress",
                f"`serve --workers {n}`: accepted (p95 {many['p95_ms']:g} ms; RSS {rss.get(n, 0) / 2**20:.0f} "
                f"vs {rss.get(1, 0) / 2**20:.0f} MB with one)",
                many["per_second"],
                "req/s",
                "reference",
                None,
            )
        )
    rows.append(Row("ingress", "raw Redis XADD (redis-benchmark)", xadd, "ops/s", "reference", None))
    return rows
