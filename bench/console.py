"""The console's chat page in real Chromium: first paint, the whole conversation on screen, bytes moved.

It runs against ``agentapi dev`` (SQLite, embedded Redis, one ingress and one worker), the stack a
new user first opens the console on. Each sample is a fresh browser context (empty cache, as a first visit) opening the chat page of an
echo session that already holds a conversation; the token is put in sessionStorage before the page
loads, as the sign-in form leaves it. Figures come from the browser's own Performance API.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

from bench.harness import ECHO, Row, summary_ms, until_stable
from tests.fixtures.stack import free_port

EXCHANGES = 10
FIRST_PAINT = "() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime"
READY_SCRIPT = """() => {
  const paint = performance.getEntriesByName("first-contentful-paint")[0];
  const nav = performance.getEntriesByType("navigation")[0];
  const resources = performance.getEntriesByType("resource");
  const assets = resources.filter((r) => r.initiatorType !== "fetch");
  const api = resources.filter((r) => r.initiatorType === "fetch");
  const sum = (entries) => entries.reduce((total, r) => total + r.transferSize, 0);
  return {
    first_paint_ms: paint ? paint.startTime : null,
    ready_ms: performance.now(),
    page_bytes: nav.transferSize + sum(assets),
    api_bytes: sum(api),
  };
}"""


async def _dev_token(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The owner token ``agentapi dev`` prints on the line after its heading, once it is up."""
    while proc.poll() is None:
        lines = (await asyncio.to_thread(log.read_text, errors="replace")).splitlines()
        for number, line in enumerate(lines[:-1]):
            if line.startswith("token (owner"):
                return lines[number + 1].strip()
        await asyncio.sleep(0.2)
    raise RuntimeError(f"agentapi dev exited ({proc.returncode}) before printing its token: see {log}")


def _start_dev(port: int, data_dir: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "api.cli", "dev", "--port", str(port), "--data-dir", data_dir],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@asynccontextmanager
async def dev_stack() -> AsyncIterator[tuple[str, str]]:
    """``agentapi dev`` in a data directory of its own: its base URL and owner token."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="agentapi-bench-dev-") as data_dir:
        log = Path(data_dir) / "dev.log"
        proc = await asyncio.to_thread(_start_dev, port, data_dir, log)
        try:
            yield f"http://127.0.0.1:{port}", await _dev_token(proc, log)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)


async def conversation(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """An echo session holding EXCHANGES questions and answers (each sent once the last is stored)."""
    created = (await client.post("/api/v1/sessions", json={**ECHO, "title": "bench"}, headers=headers)).json()
    session = f"/api/v1/sessions/{created['id']}"
    await until_stable(client, created["events_url"], headers)
    for number in range(EXCHANGES):
        text = f"message {number} of the console bench"
        while (
            await client.post(f"{session}/message", json={"content": text}, headers=headers)
        ).status_code == 409:
            await asyncio.sleep(0.1)  # the agent still works on the previous one
        while f"echo: {text}" not in {
            m["content"]
            for m in (await client.get(f"{session}/messages", headers=headers)).json()["messages"]
        }:
            await asyncio.sleep(0.1)
    return str(created["id"])


async def bench(quick: bool) -> list[Row]:
    samples = 5 if quick else 20
    browser_path = os.environ.get("AGENTAPI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    paints: list[float] = []
    readies: list[float] = []
    anchors: list[float] = []
    sizes: list[dict[str, int]] = []
    async with dev_stack() as (base_url, token):
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            session_id = await conversation(client, headers)
        last = f"message {EXCHANGES - 1} of the console bench"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            try:
                for _ in range(samples + 1):  # the first warms the server's caches and is dropped
                    context = await browser.new_context(base_url=base_url)
                    await context.add_init_script(
                        f"sessionStorage.setItem('agentapi.token', {json.dumps(token)})"
                    )
                    page = await context.new_page()
                    await page.goto(f"/console#/chat/{session_id}")
                    await page.locator(".message.agent", has_text=f"echo: {last}").wait_for()
                    figures = await page.evaluate(READY_SCRIPT)
                    await context.close()
                    # The floor under it: the same browser's first paint of a bare JSON answer.
                    context = await browser.new_context(base_url=base_url)
                    page = await context.new_page()
                    await page.goto("/health")
                    await page.wait_for_function(FIRST_PAINT)
                    anchors.append(await page.evaluate(FIRST_PAINT) / 1000)
                    await context.close()
                    paints.append(figures["first_paint_ms"] / 1000)
                    readies.append(figures["ready_ms"] / 1000)
                    sizes.append({"page_bytes": figures["page_bytes"], "api_bytes": figures["api_bytes"]})
            finally:
                await browser.close()
    paint, ready, anchor = summary_ms(paints[1:]), summary_ms(readies[1:]), summary_ms(anchors[1:])
    page_bytes = max(size["page_bytes"] for size in sizes[1:])
    details = {
        "first_paint": paint,
        "conversation_shown": ready,
        "health_first_paint": anchor,
        "messages": 2 * EXCHANGES + 1,
        **sizes[-1],
    }
    return [
        Row(
            "console",
            "chat page first paint p50",
            paint["p50_ms"],
            "ms",
            "< 1000 ms",
            paint["p50_ms"] < 1000,
            details,
        ),
        Row(
            "console",
            "chat page first paint p95",
            paint["p95_ms"],
            "ms",
            "< 1000 ms",
            paint["p95_ms"] < 1000,
            details,
        ),
        Row(
            "console",
            "anchor: GET /health first paint p95",
            anchor["p95_ms"],
            "ms",
            "reference",
            None,
            details,
        ),
        Row("console", "chat page, whole conversation shown p95", ready["p95_ms"], "ms", "—", None, details),
        Row(
            "console",
            "chat page transfer (HTML, JS, CSS)",
            round(page_bytes / 1024, 1),
            "KiB",
            "—",
            None,
            details,
        ),
    ]
