"""Submit → first SSE byte of the echo agent's reply: one session, one SSE connection, messages one
after another (each once the agent is stable again)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from httpx_sse import aconnect_sse

from bench.harness import Row, stack, start_echo, summary_ms


async def bench(quick: bool) -> list[Row]:
    count = 100 if quick else 1000
    samples: list[float] = []
    async with stack() as s:
        headers = s.headers()
        async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as client:
            session = await start_echo(client, s, headers)
            events: asyncio.Queue[tuple[float, str, dict[str, object]]] = asyncio.Queue()

            async def listen() -> None:
                async with aconnect_sse(
                    client, "GET", f"/api/v1/sessions/{session}/events", headers=headers
                ) as src:
                    async for sse in src.aiter_sse():
                        if sse.data:
                            await events.put((time.perf_counter(), sse.event, json.loads(sse.data)))

            listener = asyncio.create_task(listen())
            await asyncio.sleep(0.5)
            while not events.empty():
                events.get_nowait()
            for number in range(count):
                text = f"latency {number}"
                started = time.perf_counter()
                answer = await client.post(
                    f"/api/v1/sessions/{session}/message", json={"content": text}, headers=headers
                )
                if answer.status_code != 200:
                    await asyncio.sleep(0.05)
                    continue
                first = None
                while True:
                    at, name, data = await asyncio.wait_for(events.get(), 30)
                    if first is None and name == "message_update" and data.get("role") == "agent":
                        first = at
                    if name == "status_change" and data.get("status") == "stable" and first is not None:
                        break
                samples.append(first - started)
            listener.cancel()
            await client.delete(f"/api/v1/sessions/{session}", headers=headers)
    figures = summary_ms(samples)
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
