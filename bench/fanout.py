"""SSE fan-out: many subscribers on one session of one ingress process; the time from posting a
message to each subscriber receiving the agent's reply."""

from __future__ import annotations

import asyncio
import time

import httpx
import redis.asyncio

from bench.harness import Row, cpu_seconds, stack, start_echo, summary_ms
from bench.sse_clients import subscribers
from events.envelope import Event
from events.streams import FIELD, Names


async def _reply_logged(env: dict[str, str], session: str, marker: str) -> float:
    """When the agent's reply carrying ``marker`` entered the session's log (its stream id)."""
    client = redis.asyncio.Redis.from_url(env["AGENTAPI_REDIS_URL"], decode_responses=True)
    try:
        entries = await client.xrange(Names(env["AGENTAPI_REDIS_PREFIX"]).session_log(session))
    finally:
        await client.aclose()
    for entry_id, fields in entries:
        event = Event.from_wire(fields[FIELD])
        if event.payload.get("role") == "agent" and marker in str(event.payload.get("content", "")):
            return int(entry_id.split("-")[0]) / 1000
    return float("nan")


async def bench(quick: bool) -> list[Row]:
    total = 500 if quick else 5000
    async with stack({"AGENTAPI_SSE_HEARTBEAT_SECONDS": "15"}) as s:
        headers = s.headers()
        async with httpx.AsyncClient(base_url=s.base_url, timeout=60) as client:
            session = await start_echo(client, s, headers)
            marker = f"fanout-{time.time_ns()}"
            url = f"{s.base_url}/api/v1/sessions/{session}/events"
            async with subscribers(url, headers, total, marker) as subs:
                connected = await subs.connected()
                await asyncio.sleep(1)
                # The ingress's CPU from the POST until every delivery is in: steadier than the
                # delays on a shared machine, where wall clock swings with the other tenants' load.
                assert s.server is not None
                cpu_before = cpu_seconds(s.server.pid)
                # The subscribers share the 2 cores with the ingress: their CPU per received event
                # says whether the client side is what delays the delivery.
                clients_before = sum(cpu_seconds(subs.pid))
                posted = time.time()
                await client.post(
                    f"/api/v1/sessions/{session}/message", json={"content": marker}, headers=headers
                )
                answered_at = time.time()
                outcome = await subs.outcome()
                user, system = cpu_seconds(s.server.pid)
                clients_cpu = sum(cpu_seconds(subs.pid)) - clients_before
            ingress_user, ingress_sys = user - cpu_before[0], system - cpu_before[1]
            delays = [at - posted for at in outcome.received]
            logged_at = await _reply_logged(s.env, session, marker)
            await client.delete(f"/api/v1/sessions/{session}", headers=headers)
    delivery = summary_ms(delays)
    figures = {
        **delivery,
        "subscribers": total,
        "connected": connected,
        "delivered": len(delays),
        "failures": outcome.failures,
        "retries": outcome.retries,
        # Where the time before the first delivery went: the POST's answer, the reply in the log.
        "post_answered_ms": round((answered_at - posted) * 1000, 1),
        "reply_logged_ms": round((logged_at - posted) * 1000, 1),
        "ingress_cpu_ms": round((ingress_user + ingress_sys) * 1000),
        "ingress_sys_ms": round(ingress_sys * 1000),
        "ingress_cpu_us_per_delivery": round((ingress_user + ingress_sys) * 1e6 / max(len(delays), 1), 1),
        "clients_cpu_ms": round(clients_cpu * 1000),
        "clients_cpu_us_per_delivery": round(clients_cpu * 1e6 / max(len(delays), 1), 1),
    }
    return [
        Row(
            "fan-out",
            f"{total} subscribers, delivery p99",
            delivery["p99_ms"],
            "ms",
            "5000 subscribers, <= 200 ms",
            total >= 5000 and len(delays) == total and delivery["p99_ms"] <= 200,
            figures,
        )
    ]
