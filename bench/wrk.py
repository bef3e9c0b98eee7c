"""HTTP load from `wrk`, a C load generator, so the figure is the server's and not the client's.

A Python client saturates first on this machine (two httpx processes topped out at ~350-800 req/s
while a bare Litestar answered ~6,500), so there is no fallback: without `wrk` the bench stops and
says how to install it. The generator is pinned to the last core when the machine has more than one,
so it does not float onto the core the server is using.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

INSTALL_HINT = "install wrk (Debian: apt-get install wrk) to run the HTTP benches"

# wrk calls done() once with the merged latency histogram; printing JSON from it is the supported way
# to get percentiles other than the fixed --latency list (p95 is not in it).
_SCRIPT = """
wrk.method = %(method)s
wrk.body = %(body)s
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p95_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


class WrkMissing(SystemExit):
    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal for ASCII input


def pinned(command: list[str]) -> list[str]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpus[-1]), *command]
    return command


def wrk(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    seconds: float = 10.0,
    connections: int = 64,
    threads: int = 1,
) -> dict[str, Any]:
    """Run wrk against ``url``; accepted requests per second (2xx/3xx) and latency percentiles in ms."""
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkMissing()
    header_lines = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in (headers or {}).items()
    )
    script = _SCRIPT % {
        "method": _lua_string(method),
        "body": _lua_string(body.decode()),
        "headers": header_lines,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "load.lua"
        path.write_text(script)
        command = [
            binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(path),
            url,
        ]
        out = subprocess.run(pinned(command), capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    refused = raw["status"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    accepted = max(0, raw["requests"] - raw["status"])
    elapsed = raw["duration_us"] / 1e6
    return {
        "per_second": round(accepted / elapsed, 1),
        "ok": accepted,
        "errors": refused,
        "seconds": round(elapsed, 2),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "connections": connections,
        "generator": f"wrk -t{threads} -c{connections}" + (" (pinned)" if pinned([]) else ""),
    }
