"""Claude over ACP (claude-code-acp) vs Claude Code in the PTY, on the same fake Messages API:
POST /sessions → first `stable`, and per turn submit → first byte of the reply and submit → the
reply completed. The PTY runs with the production settle window (2 s), which its turn end waits
out; ACP's turn ends when session/prompt returns."""

from __future__ import annotations

import json
import time

import httpx
from httpx_sse import aconnect_sse

from bench.harness import Row, stack, summary_ms
from tests.agent_cli import model_reply
from tests.fakes.anthropic_api import FakeAnthropic

API_KEY = "sk-ant-bench-key-0123456789abcdefghijklmnop"


async def one_session(
    client: httpx.AsyncClient, headers: dict[str, str], turns: int
) -> tuple[float, list[float], list[float]]:
    """Start a claude session and talk to it: (start → stable, first bytes, completions) in seconds."""
    started = time.perf_counter()
    created = (await client.post("/api/v1/sessions", json={"agent_type": "claude"}, headers=headers)).json()
    first_bytes: list[float] = []
    completions: list[float] = []
    start_took = 0.0
    async with aconnect_sse(client, "GET", created["events_url"], headers=headers) as source:
        events = source.aiter_sse()
        async for sse in events:
            if sse.event == "status_change" and json.loads(sse.data)["status"] == "stable":
                start_took = time.perf_counter() - started
                break
        for turn in range(turns):
            text = f"Bench turn {turn}"
            submitted = time.perf_counter()
            sent = await client.post(
                f"/api/v1/sessions/{created['id']}/message", json={"content": text}, headers=headers
            )
            sent.raise_for_status()
            first = None
            async for sse in events:
                if sse.event != "message_update":
                    continue
                data = json.loads(sse.data)
                if data["role"] == "agent" and data["message"] and first is None and data["id"] > 0:
                    first = time.perf_counter() - submitted
                if data["type"] == "message.completed" and data["message"] == model_reply(text):
                    completions.append(time.perf_counter() - submitted)
                    break
            # The host announces `stable` just before the completed message: the next one is accepted.
            first_bytes.append(first or float("nan"))
    await client.delete(f"/api/v1/sessions/{created['id']}", headers=headers)
    return start_took, first_bytes, completions


async def bench(quick: bool) -> list[Row]:
    sessions, turns = (2, 3) if quick else (5, 5)
    rows: list[Row] = []
    with FakeAnthropic(model_reply) as fake:
        for transport in ("pty", "acp"):
            overrides = {
                "AGENTAPI_ANTHROPIC_BASE_URL": fake.base_url,
                "AGENTAPI_ANTHROPIC_API_KEY": API_KEY,
                "AGENTAPI_CLAUDE_TRANSPORT": transport,
                "AGENTAPI_AGENT_SETTLE_SECONDS": "2",
            }
            starts: list[float] = []
            firsts: list[float] = []
            ends: list[float] = []
            async with stack(overrides) as s:
                headers = s.headers()
                async with httpx.AsyncClient(base_url=s.base_url, timeout=120) as client:
                    for _ in range(sessions):
                        took, first, done = await one_session(client, headers, turns)
                        starts.append(took)
                        firsts += first
                        ends += done
            for figure, samples in (
                ("POST /sessions → stable p50", starts),
                ("submit → first reply byte p50", firsts),
                ("submit → reply completed p50", ends),
            ):
                figures = summary_ms(samples)
                rows.append(
                    Row(
                        f"claude over {transport}",
                        figure,
                        figures["p50_ms"],
                        "ms",
                        "reference",
                        None,
                        figures,
                    )
                )
    return rows
