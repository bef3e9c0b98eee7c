"""``python -m bench.mcp_load URL TOKEN TOOL CLIENTS SECONDS``: concurrent MCP tool calls, as JSON.

MCP load needs a real MCP client (a session, JSON-RPC over Streamable HTTP), so it cannot come from
wrk. The gateway bench runs this in several processes at once, so one Python process's CPU is not
the ceiling of a concurrency figure. Each client calls one call after another for SECONDS (a slow
target gets fewer calls, not a longer run). Prints the latencies of every call (seconds) and the
span from the first call to the last answer.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport


async def _client(
    url: str, token: str, tool: str, seconds: float, warm: asyncio.Queue[None], start: asyncio.Event
) -> list[float]:
    samples = []
    async with Client(StreamableHttpTransport(url, auth=token), timeout=120) as client:
        await client.call_tool(tool, {"text": "warm-up"})
        warm.put_nowait(None)
        await start.wait()
        deadline = time.perf_counter() + seconds
        index = 0
        while time.perf_counter() < deadline:
            index += 1
            began = time.perf_counter()
            result = await client.call_tool(tool, {"text": f"call {index}"})
            samples.append(time.perf_counter() - began)
            if result.is_error:
                raise RuntimeError(f"{tool} failed: {result.content}")
    return samples


async def run(url: str, token: str, tool: str, clients: int, seconds: float) -> dict[str, object]:
    start, warm = asyncio.Event(), asyncio.Queue[None]()
    tasks = [asyncio.create_task(_client(url, token, tool, seconds, warm, start)) for _ in range(clients)]
    # Every session is open and has made a call before the clock starts; the parent starts the
    # clock of all its load processes at once.
    for _ in range(clients):
        await warm.get()
    print("READY", flush=True)
    if not await asyncio.to_thread(sys.stdin.readline):
        raise SystemExit("no start signal on stdin")
    began = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    return {"span": time.perf_counter() - began, "samples": [s for r in results for s in r]}


def main() -> None:
    url, token, tool, clients, seconds = sys.argv[1:6]
    print(json.dumps(asyncio.run(run(url, token, tool, int(clients), float(seconds)))), flush=True)


if __name__ == "__main__":
    main()
