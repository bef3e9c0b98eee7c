"""An MCP tool call through the session's gateway (ingress → tools worker → MCP server → back over
Redis) vs a direct fastmcp Client call to the same server, one call at a time, in the same run."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from bench.harness import Row, stack, start_echo, summary_ms
from events.envelope import Event
from events.streams import FIELD, Names, WorkKind
from tests.fixtures.mcp import start_mcp_server
from tests.fixtures.stack import Stack, stop


def _gateway_entry(s: Stack, session_id: str) -> tuple[str, str]:
    """The gateway URL and session token the agent was given in its MCP config file."""
    home = Path(s.env["AGENTAPI_WORKSPACE_ROOT"]) / str(s.org_id) / str(s.user_id) / session_id / ".home"
    entry = json.loads((home / ".agentapi" / "mcp.json").read_text())["mcpServers"]["agentapi"]
    return str(entry["url"]), str(entry["headers"]["Authorization"]).removeprefix("Bearer ")


Hops = dict[str, list[float]]


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


async def bench(quick: bool) -> list[Row]:
    count = 100 if quick else 500
    bearer = secrets.token_urlsafe(24)
    # "--token=": a token that starts with "-" would otherwise read as an option.
    server, url = await asyncio.to_thread(start_mcp_server, "http", f"--token={bearer}", timeout=60)
    try:
        async with stack({"AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true"}) as s:
            await asyncio.to_thread(s.start_worker, "tools")
            headers = s.headers()
            async with httpx.AsyncClient(base_url=s.base_url, timeout=60) as http:
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
                direct = Client(StreamableHttpTransport(url, auth=bearer), timeout=60)
                gateway = Client(StreamableHttpTransport(gateway_url, auth=session_token), timeout=60)
                _REDIS["client"] = redis.asyncio.Redis.from_url(
                    s.env["AGENTAPI_REDIS_URL"], decode_responses=True
                )
                _REDIS["names"] = Names(s.env["AGENTAPI_REDIS_PREFIX"])
                hops: Hops = {"ingress_in": [], "worker": [], "ingress_out": []}
                async with direct, gateway:
                    # Warm both paths (connections, the worker's client pool) before measuring.
                    await _timed_calls(direct, "echo", 20)
                    await _timed_calls(gateway, "bench__echo", 20)
                    direct_samples, gateway_samples = [], []
                    # Alternating rounds, so drift on the machine touches both paths alike.
                    for _ in range(10):
                        direct_samples += await _timed_calls(direct, "echo", count // 10)
                        gateway_samples += await _timed_calls(gateway, "bench__echo", count // 10, hops)
                await _REDIS.pop("client").aclose()
                await http.delete(f"/api/v1/sessions/{session}", headers=headers)
    finally:
        await asyncio.to_thread(stop, server)
    through, alone = summary_ms(gateway_samples), summary_ms(direct_samples)
    added = round(through["p50_ms"] - alone["p50_ms"], 2)
    return [
        Row(
            "gateway",
            "added by the gateway at p50",
            added,
            "ms",
            "<= 5 ms",
            added <= 5,
            {
                "gateway": through,
                "direct": alone,
                "calls": count,
                # agent → work event published; → answer written by the tools worker; → agent has it
                "hops_p50_ms": {name: summary_ms(values)["p50_ms"] for name, values in hops.items()},
            },
        )
    ]
