"""`python -m bench [names...] [--all] [--quick]`: run the benches, print the table, write JSON to
bench/results/.

Without names it runs the table of the README (under 10 minutes on the 2-core VM): first the
anchors, then each bench, every figure printed beside the anchor it is read against."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import platform
import time

from bench.harness import Row, table, write
from bench.ingress import BODY, bare_server, xadd_rate
from bench.wrk import wrk

# The README's table, run by default.
TABLE = ("ingress", "latency", "session_start", "gateway", "fanout", "sessions")
# Longer or narrower benches, run by name or with --all (workspaces alone takes ~6 minutes).
EXTRA = ("workspaces", "console", "acp", "sinks", "sandbox")
BENCHES = TABLE + EXTRA
# Which anchor each bench's figures are read against, unless a row names its own (the gateway's
# direct MCP call, the ingress's bare endpoint measured in its own rounds).
ANCHORED_BY = {"ingress": "http", "latency": "both", "session start": "both", "fan-out": "both"}


def calibration() -> Row:
    """How fast this machine runs plain Python, so figures from different machines compare."""
    began = time.perf_counter()
    total = 0
    for number in range(10_000_000):
        total += number
    took = time.perf_counter() - began
    return Row(
        "machine", "10M-iteration Python loop", round(took, 2), "s", "reference (~0.5 s on a laptop)", None
    )


def anchors(quick: bool) -> tuple[list[Row], dict[str, str]]:
    """The bare Litestar endpoint under wrk and raw Redis XADD, measured once at the start."""
    with bare_server() as url:
        bare = wrk(url, method="POST", headers={"content-type": "application/json"}, body=BODY, seconds=3)
    xadd = xadd_rate(20_000 if quick else 100_000)
    http = f"bare Litestar {bare['per_second']:,.0f} req/s, p50 {bare['p50_ms']:g} ms"
    redis = f"raw Redis XADD {xadd:,.0f}/s"
    rows = [
        Row(
            "anchor",
            f"bare Litestar POST ({bare['generator']}, one uvicorn)",
            bare["per_second"],
            "req/s",
            "reference",
            None,
            bare,
        ),
        Row("anchor", "raw Redis XADD (redis-benchmark -c 50)", xadd, "ops/s", "reference", None),
    ]
    return rows, {"http": http, "redis": redis, "both": f"{http}; {redis}"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *BENCHES],
        default=[],
        metavar="bench",
        help=f"which to run (default: {', '.join(TABLE)}; also {', '.join(EXTRA)})",
    )
    parser.add_argument("--all", action="store_true", help="every bench")
    parser.add_argument("--quick", action="store_true", help="small loads, for a smoke run")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    started = time.monotonic()
    load_before = os.getloadavg()
    rows: list[Row] = [calibration()]
    anchor_rows, anchor_text = anchors(args.quick)
    rows += anchor_rows
    print(f"anchors: {time.monotonic() - started:.0f} s", flush=True)
    for name in args.names or (BENCHES if args.all else TABLE):
        began = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        for row in asyncio.run(module.bench(args.quick)):
            if not row.anchor and row.bench in ANCHORED_BY:
                row.anchor = anchor_text[ANCHORED_BY[row.bench]]
            rows.append(row)
        print(f"{name}: {time.monotonic() - began:.0f} s", flush=True)
    print(f"\n{table(rows)}\n")
    load_after = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {platform.node()} · "
        f"{platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"load average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end · "
        f"total {time.monotonic() - started:.0f} s · {write(rows)}"
    )


if __name__ == "__main__":
    main()
