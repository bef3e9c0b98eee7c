"""An MCP tool call through the session's gateway (ingress → tools worker → MCP server → back over
Redis) vs a direct fastmcp Client call to the same server, and vs IBM's MCP ContextForge in front of
it when that is installed (``bench/contextforge.py``): one call at a time, then 16 clients at once,
all in the same run."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from bench import contextforge
from bench.harness import Row, percentile, stack, start_echo, summary_ms
from events.envelope import Event
from events.streams import FIELD, Names, WorkKind
from tests.fixtures.mcp import start_mcp_server
from tests.fixtures.stack import REPO, Stack, stop

CLIENTS = 16
# The concurrent load comes from this many processes (CLIENTS / LOAD_PROCESSES sessions each), so
# one Python process's CPU is not what the figure measures.
LOAD_PROCESSES = 2
# The tools worker's threads: its direct lane runs as many calls at once.
TOOLS_THREADS = CLIENTS


def _gateway_entry(s: Stack, session_id: str) -> tuple[str, str]:
    """The gateway URL and session token the agent was given in its MCP config file."""
    home = Path(s.env["AGENTAPI_WORKSPACE_ROOT"]) / str(s.org_id) / str(s.user_id) / session_id / ".home"
    entry = json.loads((home / ".agentapi" / "mcp.json").read_text())["mcpServers"]["agentapi"]
    return str(entry["url"]), str(entry["headers"]["Authorization"]).removeprefix("Bearer ")


Hops = dict[str, list[float]]
# name → (endpoint, token, tool)
Target = tuple[str, str, str]


async def _timed_calls(client: Client, tool: str, count: int, hops: Hops | None = None) -> list[float]:
    """``count`` calls one after another; with ``hops``, each gateway call is split by the Redis
    stream ids (Redis's clock, in ms) of its work event and of its answer."""
    samples = []
    for index in range(count):
        started, wall = time.perf_counter(), time.time()
        result = await client.call_tool(tool, {"text": f"call {index}"})
        samples.append(time.perf_counter() - started)
        ended = time.time()
        assert not result.is_error
        if hops is not None:
            published, answered = await _stream_times()
            hops["ingress_in"].append(published - wall)
            hops["worker"].append(answered - published)
            hops["ingress_out"].append(ended - answered)
    return samples


_REDIS: dict[str, Any] = {}


async def _stream_times() -> tuple[float, float]:
    """When the latest tool call's work event was published and when its answer was written."""
    client, names = _REDIS["client"], _REDIS["names"]
    ((entry_id, fields),) = await client.xrevrange(names.work(WorkKind.TOOLS), count=1)
    event = Event.from_wire(fields[FIELD])
    ((reply_id, _),) = await client.xrange(names.reply(event.id), count=1)
    return _ms(entry_id), _ms(reply_id)


def _ms(stream_id: str) -> float:
    return int(stream_id.split("-")[0]) / 1000


async def _concurrent(target: Target, seconds: float) -> dict[str, Any]:
    """CLIENTS MCP sessions calling at once, one call after another each, for ``seconds``; calls/s
    and latency."""
    url, token, tool = target
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.mcp_load",
            url,
            token,
            tool,
            str(CLIENTS // LOAD_PROCESSES),
            str(seconds),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(LOAD_PROCESSES)
    ]
    for proc in procs:
        assert proc.stdout is not None
        ready = await proc.stdout.readline()
        if ready.strip() != b"READY":
            raise RuntimeError(f"an MCP load process failed to start: {ready!r}")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    results = []
    for proc in procs:
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"an MCP load process failed ({proc.returncode})")
        results.append(json.loads(out))
    samples = [s for r in results for s in r["samples"]]
    span = max(r["span"] for r in results)
    return {
        "calls_per_s": round(len(samples) / span, 1),
        "calls": len(samples),
        "clients": CLIENTS,
        "load_processes": LOAD_PROCESSES,
        **summary_ms(samples),
    }


@asynccontextmanager
async def _in_thread(manager: Any) -> Any:
    """A blocking context manager entered and left off the event loop."""
    entered = await asyncio.to_thread(manager.__enter__)
    try:
        yield entered
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


async def _project_target(s: Stack, http: httpx.AsyncClient, url: str, bearer: str) -> Target:
    headers = s.headers()
    created = await http.post(
        "/api/v1/mcp/configurations",
        json={
            "name": "bench",
            "transport": "http",
            "endpoint_url": url,
            "auth_type": "bearer",
            "bearer_token": bearer,
        },
        headers=headers,
    )
    created.raise_for_status()
    session = await start_echo(http, s, headers)
    gateway_url, session_token = _gateway_entry(s, session)
    return gateway_url, session_token, "bench__echo"


async def bench(quick: bool) -> list[Row]:
    count = 100 if quick else 300
    seconds = 4.0 if quick else 6.0
    bearer = secrets.token_urlsafe(24)
    # "--token=": a token that starts with "-" would otherwise read as an option.
    server, url = await asyncio.to_thread(start_mcp_server, "http", f"--token={bearer}", timeout=60)
    targets: dict[str, Target] = {"direct": (url, bearer, "echo")}
    sequential: dict[str, list[float]] = {}
    concurrent: dict[str, dict[str, Any]] = {}
    hops: Hops = {"ingress_in": [], "worker": [], "ingress_out": []}
    cf_version = None
    try:
        async with AsyncExitStack() as running:
            # Both take tens of seconds to start on a busy machine: side by side.
            platform = running.enter_async_context(stack({"AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true"}))
            if contextforge.installed():
                peer = running.enter_async_context(_in_thread(contextforge.contextforge(url, bearer)))
                s, cf = await asyncio.gather(platform, peer)
                targets["contextforge"] = (cf.url, cf.token, cf.tool)
                cf_version = cf.version
            else:
                s = await platform
            await asyncio.to_thread(s.start_worker, "tools", threads=TOOLS_THREADS)
            http = await running.enter_async_context(httpx.AsyncClient(base_url=s.base_url, timeout=60))
            targets["project"] = await _project_target(s, http, url, bearer)
            _REDIS["client"] = redis.asyncio.Redis.from_url(
                s.env["AGENTAPI_REDIS_URL"], decode_responses=True
            )
            _REDIS["names"] = Names(s.env["AGENTAPI_REDIS_PREFIX"])
            clients = {
                name: Client(StreamableHttpTransport(endpoint, auth=token), timeout=60)
                for name, (endpoint, token, _) in targets.items()
            }
            for client in clients.values():
                await running.enter_async_context(client)
            # Warm every path (connections, the worker's upstream session) before measuring.
            for name, client in clients.items():
                await _timed_calls(client, targets[name][2], 20)
                sequential[name] = []
            # Alternating rounds, so drift on the machine touches every path alike. ContextForge,
            # ten times slower, makes a tenth of the calls, so the bench keeps to its time.
            for _ in range(10):
                for name, client in clients.items():
                    split = hops if name == "project" else None
                    calls = count // 10 // (10 if name == "contextforge" else 1)
                    sequential[name] += await _timed_calls(client, targets[name][2], calls, split)
            for name, target in targets.items():
                concurrent[name] = await _concurrent(target, seconds)
            await _REDIS.pop("client").aclose()
    finally:
        await asyncio.to_thread(stop, server)
    return _rows(sequential, concurrent, hops, count, cf_version)


def _rows(
    sequential: dict[str, list[float]],
    concurrent: dict[str, dict[str, Any]],
    hops: Hops,
    count: int,
    cf_version: str | None,
) -> list[Row]:
    p50 = {name: percentile(samples, 50) * 1000 for name, samples in sequential.items()}
    added = round(p50["project"] - p50["direct"], 2)
    direct_rate = concurrent["direct"]["calls_per_s"]
    share = round(100 * concurrent["project"]["calls_per_s"] / direct_rate, 1)
    details = {
        "sequential": {name: summary_ms(samples) for name, samples in sequential.items()},
        "concurrent": concurrent,
        "calls": count,
        # agent → work event published; → answer written by the tools worker; → agent has it
        "hops_p50_ms": {name: summary_ms(values)["p50_ms"] for name, values in hops.items()},
        "contextforge": cf_version,
    }
    project, direct = concurrent["project"], concurrent["direct"]
    one_at_a_time = f"direct MCP p50 {p50['direct']:.1f} ms"
    together = f"direct MCP {direct_rate:g} calls/s, p99 {direct['p99_ms']:g} ms"
    rows = [
        Row(
            "gateway",
            f"added at p50, one call at a time (through the gateway: {p50['project']:.1f} ms)",
            added,
            "ms",
            "<= 5 ms",
            added <= 5,
            details,
            one_at_a_time,
        ),
        Row(
            "gateway",
            f"{CLIENTS} clients: {project['calls_per_s']:g} calls/s, p99 {project['p99_ms']:g} ms",
            share,
            "% of direct",
            ">= 50 %",
            share >= 50,
            anchor=together,
        ),
    ]
    if cf_version is None:
        rows.append(
            Row(
                "gateway",
                f"ContextForge: not measured (optional; install: {contextforge.INSTALL_HINT})",
                float("nan"),
                "",
                "reference",
                None,
            )
        )
        return rows
    cf = concurrent["contextforge"]
    cf_added = round(p50["contextforge"] - p50["direct"], 2)
    rows += [
        Row(
            "gateway",
            f"ContextForge {cf_version} (SQLite, auth on) added at p50 ({p50['contextforge']:.1f} ms)",
            cf_added,
            "ms",
            "reference",
            None,
            anchor=one_at_a_time,
        ),
        Row(
            "gateway",
            f"ContextForge {CLIENTS} clients: {cf['calls_per_s']:g} calls/s, p99 {cf['p99_ms']:g} ms",
            round(100 * cf["calls_per_s"] / direct_rate, 1),
            "% of direct",
            "reference",
            None,
            anchor=together,
        ),
    ]
    return rows
