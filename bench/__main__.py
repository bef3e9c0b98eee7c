"""`python -m bench [names...] [--quick]`: run the benches, print the table, write JSON to bench/results/."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import platform
import time

from bench.harness import Row, table, write

BENCHES = (
    "ingress",
    "latency",
    "session_start",
    "gateway",
    "fanout",
    "sessions",
    "workspaces",
    "console",
    "acp",
    "sinks",
    "sandbox",
)


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *BENCHES],
        default=[],
        metavar="bench",
        help=f"which to run (default: all of {', '.join(BENCHES)})",
    )
    parser.add_argument("--quick", action="store_true", help="small loads, for a smoke run")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    rows: list[Row] = [calibration()]
    started = time.monotonic()
    for name in args.names or BENCHES:
        began = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        rows += asyncio.run(module.bench(args.quick))
        print(f"{name}: {time.monotonic() - began:.0f} s", flush=True)
    print(f"\n{table(rows)}\n")
    print(
        f"{platform.node()} · {platform.machine()} · {platform.python_version()} · "
        f"total {time.monotonic() - started:.0f} s · {write(rows)}"
    )


if __name__ == "__main__":
    main()
