"""Idle echo sessions one worker host holds at once, and the worker's RSS per session (the agents'
own processes excluded: they are the worker's children, with their own RSS)."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

import httpx

from bench.harness import RESULTS, Row, create_echo, rss_bytes, stack, until_stable
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
                failures: list[str] = []

                async def one() -> str | None:
                    async with gate:
                        session: dict[str, Any] = {}
                        try:
                            session = await create_echo(client, headers)
                            await asyncio.wait_for(until_stable(client, session["events_url"], headers), 120)
                            return str(session["id"])
                        except (TimeoutError, httpx.HTTPError, KeyError) as exc:
                            failures.append(
                                f"{session.get('id')}: {exc!r}, {await _state(client, session, headers)}"
                            )
                            return None

                sessions = [sid for sid in await asyncio.gather(*(one() for _ in range(count))) if sid]
                if failures and s.log_file:
                    # The stack's log goes with its scratch directory: keep it for whoever reads the row.
                    RESULTS.mkdir(exist_ok=True)
                    kept = RESULTS / f"sessions-{time.strftime('%Y%m%d-%H%M%S')}.log"
                    shutil.copyfile(s.log_file, kept)
                    failures.append(f"stack log: {kept}")
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
        "failures": failures,
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


async def _state(client: httpx.AsyncClient, session: dict[str, Any], headers: dict[str, str]) -> str:
    """What the API says of a session that did not come up (its row and, while live, its agent)."""
    if "id" not in session:
        return f"not created: {session}"
    try:
        answer = await client.get(f"/api/v1/sessions/{session['id']}", headers=headers)
    except httpx.HTTPError as exc:
        return f"unreadable: {exc!r}"
    return answer.text
