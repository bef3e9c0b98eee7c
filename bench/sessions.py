"""Idle echo sessions one worker host holds at once, and the worker's RSS per session (the agents'
own processes excluded: they are the worker's children, with their own RSS)."""

from __future__ import annotations

import asyncio

import httpx

from bench.harness import Row, rss_bytes, stack, start_echo
from tests.fixtures.stack import spawn, stop


async def bench(quick: bool) -> list[Row]:
    count = 40 if quick else 500
    async with stack(worker=False) as s:
        worker = spawn(["worker", "--threads", str(count + 8), "--queues", "sessions"], s.env, s.log_file)
        try:
            await asyncio.sleep(3)
            before = rss_bytes(worker.pid)
            headers = s.headers()
            gate = asyncio.Semaphore(8)
            async with httpx.AsyncClient(base_url=s.base_url, timeout=120) as client:

                async def one() -> str | None:
                    async with gate:
                        try:
                            return await asyncio.wait_for(start_echo(client, s, headers), 120)
                        except (TimeoutError, httpx.HTTPError):
                            return None

                sessions = [sid for sid in await asyncio.gather(*(one() for _ in range(count))) if sid]
                await asyncio.sleep(2)
                after = rss_bytes(worker.pid)
                for sid in sessions:
                    await client.delete(f"/api/v1/sessions/{sid}", headers=headers)
        finally:
            await asyncio.to_thread(stop, worker, 60)
    per_session = (after - before) / max(len(sessions), 1) / 1e6
    details = {
        "asked": count,
        "stable": len(sessions),
        "rss_before_mb": before / 1e6,
        "rss_after_mb": after / 1e6,
    }
    return [
        Row(
            "sessions",
            "idle sessions held by one worker",
            len(sessions),
            "sessions",
            ">= 500",
            len(sessions) >= 500,
            details,
        ),
        Row(
            "sessions",
            "worker RSS per session",
            round(per_session, 2),
            "MB",
            "<= 5 MB",
            per_session <= 5,
            details,
        ),
    ]
