"""Submit → first SSE byte of the echo agent's reply: one session, one SSE connection, messages one
after another (each once the agent is stable again)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench.harness import Row, cpu_seconds, stack, start_echo, summary_ms


@dataclass
class Turns:
    """Per turn: submit → first reply byte, the POST's own round trip, when the reply's event
    reached the log (its stream id is Redis's clock in ms), and log → SSE client."""

    samples: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    to_log: list[float] = field(default_factory=list)
    relayed: list[float] = field(default_factory=list)
    busy: int = 0


async def measure_turns(
    client: httpx.AsyncClient,
    session: str,
    headers: dict[str, str],
    count: int,
    before_each: Callable[[int], Awaitable[None]] | None = None,
) -> Turns:
    """``count`` messages to an echo session, each once the agent is stable again (after
    ``before_each(n)``, untimed), over one SSE connection."""
    turns = Turns()
    events: asyncio.Queue[tuple[float, str, str, dict[str, Any]]] = asyncio.Queue()

    async def listen() -> None:
        async with aconnect_sse(client, "GET", f"/api/v1/sessions/{session}/events", headers=headers) as src:
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
    while len(turns.samples) < count and turns.busy < count:
        await until_stable()
        if before_each is not None:
            await before_each(len(turns.samples))
        started = time.time()
        answer = await client.post(
            f"/api/v1/sessions/{session}/message",
            json={"content": f"latency {len(turns.samples)}"},
            headers=headers,
        )
        answered = time.time()
        if answer.status_code != 200:
            turns.busy += 1
            continue
        status, before = "running", last_agent
        while True:
            at, name, entry_id, data = await asyncio.wait_for(events.get(), 30)
            note(name, data)
            if last_agent > before:
                turns.samples.append(at - started)
                turns.accepted.append(answered - started)
                logged = int(entry_id.split("-")[0]) / 1000
                turns.to_log.append(logged - started)
                turns.relayed.append(at - logged)
                break
    listener.cancel()
    return turns


async def bench(quick: bool) -> list[Row]:
    count = 100 if quick else 300
    async with stack() as s:
        headers = s.headers()
        async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as client:
            session = await start_echo(client, s, headers)
            # CPU over the turns (the agents are the worker's children: not counted).
            pids = {"sessions_worker": s.workers[0].pid, "ingress": s.server.pid if s.server else 0}
            cpu_before = {name: sum(cpu_seconds(pid)) for name, pid in pids.items()}
            turns = await measure_turns(client, session, headers, count)
            cpu_ms = {
                f"{name}_cpu_ms_per_turn": round((sum(cpu_seconds(pid)) - cpu_before[name]) * 1000 / count, 2)
                for name, pid in pids.items()
            }
            await client.delete(f"/api/v1/sessions/{session}", headers=headers)
    samples, busy = turns.samples, turns.busy
    accepted, to_log, relayed = turns.accepted, turns.to_log, turns.relayed
    figures = {
        **summary_ms(samples),
        "busy_409": busy,
        "post_answered": summary_ms(accepted),
        "reply_in_event_log": summary_ms(to_log),
        "log_to_sse_client": summary_ms(relayed),
        **cpu_ms,
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
