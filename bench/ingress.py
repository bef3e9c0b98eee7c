"""Accepted `POST /sessions/{id}/message` per second (JWT auth, tenant lookup, Redis XADD) vs a bare
Litestar endpoint and raw Redis XADD, in the same run, with `wrk` at 64 connections for both.

`raw` messages are measured because they are accepted whatever the agent is doing; a `user` message
is refused (409) unless the agent is stable, which no load generator could keep up with.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time

import httpx

from bench.harness import Row, stack, start_echo
from bench.wrk import wrk
from tests.fixtures.stack import free_port, stop

BODY = json.dumps({"content": "x", "type": "raw"}).encode()


def bare_rate(seconds: float) -> dict[str, float]:
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
    try:
        for _ in range(100):
            try:
                httpx.post(f"http://127.0.0.1:{port}/message", json={}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        return wrk(
            f"http://127.0.0.1:{port}/message",
            method="POST",
            headers={"content-type": "application/json"},
            body=BODY,
            seconds=seconds,
        )
    finally:
        stop(server)


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


async def bench(quick: bool) -> list[Row]:
    seconds = 3.0 if quick else 10.0
    async with stack() as s:
        headers = s.headers()
        async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as client:
            session = await start_echo(client, s, headers)
        platform = await asyncio.to_thread(
            wrk,
            f"{s.base_url}/api/v1/sessions/{session}/message",
            method="POST",
            headers={**headers, "content-type": "application/json"},
            body=BODY,
            seconds=seconds,
        )
        async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as client:
            await client.delete(f"/api/v1/sessions/{session}", headers=headers)
    bare = bare_rate(seconds)
    xadd = xadd_rate(20_000 if quick else 100_000)
    ratio = platform["per_second"] / bare["per_second"] if bare["per_second"] else float("nan")
    details = {
        "platform": platform,
        "bare": bare,
        "xadd_per_second": xadd,
    }
    return [
        Row(
            "ingress",
            "POST .../message accepted",
            platform["per_second"],
            "req/s",
            ">= 10000/s",
            platform["per_second"] >= 10_000,
            details,
        ),
        Row(
            "ingress",
            "vs bare Litestar endpoint",
            round(100 * ratio, 1),
            "%",
            ">= 50 %",
            ratio >= 0.5,
            {"bare_per_second": bare["per_second"]},
        ),
        Row(
            "ingress",
            f"POST .../message p95 at {platform['connections']} connections (bare: {bare['p95_ms']:g} ms)",
            platform["p95_ms"],
            "ms",
            "< 100 ms",
            platform["p95_ms"] < 100,
        ),
        Row("ingress", "raw Redis XADD (redis-benchmark)", xadd, "ops/s", "reference", None),
    ]
