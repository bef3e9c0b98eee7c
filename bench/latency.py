"""Submit → first SSE byte of the echo agent's reply: one session, one SSE connection, messages one
after another (each once the agent is stable again)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench.harness import Row, stack, start_echo, summary_ms


async def bench(quick: bool) -> list[Row]:
    count = 100 if quick else 1000
    samples: list[float] = []
    # Where the time goes: the POST's own round trip, and when the reply's event reached the log
    # (its stream id is Redis's clock in ms) against when the SSE client had it.
    accepted: list[float] = []
    to_log: list[float] = []
    relayed: list[float] = []
    busy = 0
    async with stack() as s:
        headers = s.headers()
        async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as client:
            session = await start_echo(client, s, headers)
            events: asyncio.Queue[tuple[float, str, str, dict[str, Any]]] = asyncio.Queue()

            async def listen() -> None:
                async with aconnect_sse(
                    client, "GET", f"/api/v1/sessions/{session}/events", headers=headers
                ) as src:
                    async for sse in src.aiter_sse():
                        if sse.data:
                            await events.put((time.time(), sse.event, sse.id, json.loads(sse.data)))

            listener = asyncio.create_task(listen())
            status, last_agent = "", -1

            def note(name: str, data: dict[str, Any]) -> None:
                nonlocal status, last_agent
                if name == "status_change":
                    status = str(data.get("status"))
                elif name == "message_update" and data.get("role") == "agent":
                    last_agent = max(last_agent, int(data["id"]))

            async def until_stable() -> None:
                while status != "stable" or not events.empty():
                    _, name, _, data = await asyncio.wait_for(events.get(), 30)
                    note(name, data)

            await asyncio.sleep(0.5)
            while len(samples) < count and busy < count:
                await until_stable()
                started = time.time()
                answer = await client.post(
                    f"/api/v1/sessions/{session}/message",
                    json={"content": f"latency {len(samples)}"},
                    headers=headers,
                )
                answered = time.time()
                if answer.status_code != 200:
                    busy += 1
                    continue
                status, before = "running", last_agent
                while True:
                    at, name, entry_id, data = await asyncio.wait_for(events.get(), 30)
                    note(name, data)
                    if last_agent > before:
                        samples.append(at - started)
                        accepted.append(answered - started)
                        logged = int(entry_id.split("-")[0]) / 1000
                        to_log.append(logged - started)
                        relayed.append(at - logged)
                        break
            listener.cancel()
            await client.delete(f"/api/v1/sessions/{session}", headers=headers)
    figures = {
        **summary_ms(samples),
        "busy_409": busy,
        "post_answered": summary_ms(accepted),
        "reply_in_event_log": summary_ms(to_log),
        "log_to_sse_client": summary_ms(relayed),
    }
    return [
        Row(
            "latency",
            "submit → first reply byte p50",
            figures["p50_ms"],
            "ms",
            "<= 30 ms",
            figures["p50_ms"] <= 30,
            figures,
        ),
        Row(
            "latency",
            "submit → first reply byte p99",
            figures["p99_ms"],
            "ms",
            "<= 100 ms",
            figures["p99_ms"] <= 100,
            figures,
        ),
    ]
