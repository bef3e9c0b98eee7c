"""SSE fan-out: many subscribers on one session of one ingress process; the time from posting a
message to each subscriber receiving the agent's reply."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
from typing import Any

import httpx
import redis.asyncio

from bench.harness import Row, cpu_seconds, stack, start_echo, summary_ms
from events.envelope import Event
from events.streams import FIELD, Names

# Connections one subscriber tries before it counts as failed.
ATTEMPTS = 4


class Refused(Exception):
    def __init__(self, status: str, retry_after: float) -> None:
        super().__init__(f"HTTP {status}")
        self.retry_after = retry_after


async def _subscribe(
    url: httpx.URL, headers: dict[str, str], marker: bytes, connected: asyncio.Event
) -> asyncio.StreamWriter:
    """One SSE subscriber on a bare asyncio connection: thousands of httpx streams would spend the
    two cores this machine has on the client's parsing, and the figure would measure the client.
    Returns the open connection once a data line carries the agent's reply with the marker."""
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Accept": "text/event-stream"}.items())
        writer.write(f"GET {url.raw_path.decode()} HTTP/1.1\r\nHost: {url.host}\r\n{head}\r\n".encode())
        status = (await reader.readline()).split(b" ")
        if len(status) < 2 or status[1] != b"200":
            retry_after = 1.0
            while (line := await reader.readline()).strip():
                if line.lower().startswith(b"retry-after:"):
                    retry_after = float(line.split(b":")[1])
            raise Refused(status[1].decode() if len(status) > 1 else "?", retry_after)
        connected.set()
        while line := await reader.readline():
            if line.startswith(b"data:") and marker in line and b'"role":"agent"' in line:
                return writer
        raise ConnectionError("the stream ended before the reply")
    except BaseException:
        writer.close()
        raise


def _subscribers(args: tuple[str, dict[str, str], int, str, Any, Any, Any]) -> None:
    """``count`` subscribers that, like an SSE client, reconnect when the stream ends and wait out
    a 503's Retry-After; they hang up only when every process has reported (``release``), so no
    teardown competes with a delivery still under way."""
    url, headers, count, marker, ready, results, release = args
    received: list[float] = []
    failures: dict[str, int] = {}
    retries: dict[str, int] = {}
    open_streams: list[asyncio.StreamWriter] = []

    async def one() -> None:
        connected = asyncio.Event()
        reported = asyncio.create_task(connected.wait())
        reported.add_done_callback(lambda _: ready.put(1))
        try:
            for attempt in range(ATTEMPTS):
                try:
                    open_streams.append(await _subscribe(httpx.URL(url), headers, marker.encode(), connected))
                    received.append(time.time())
                    return
                except Exception as exc:  # a refused or dropped subscriber is a figure, not a crash
                    name = str(exc) if isinstance(exc, Refused) else type(exc).__name__
                    if attempt == ATTEMPTS - 1:
                        failures[name] = failures.get(name, 0) + 1
                        return
                    retries[name] = retries.get(name, 0) + 1
                    await asyncio.sleep(exc.retry_after if isinstance(exc, Refused) else 0.5)
        finally:
            if not connected.is_set():
                reported.cancel()
                ready.put(0)

    async def main() -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 110)
        except TimeoutError:
            failures["TimeoutError"] = failures.get("TimeoutError", 0) + 1
        results.put((received, failures, retries))
        await asyncio.to_thread(release.wait, 60)
        for writer in open_streams:
            writer.close()

    asyncio.run(main())


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
    total, processes = (500, 2) if quick else (5000, 4)
    async with stack({"AGENTAPI_SSE_HEARTBEAT_SECONDS": "15"}) as s:
        headers = s.headers()
        async with httpx.AsyncClient(base_url=s.base_url, timeout=60) as client:
            session = await start_echo(client, s, headers)
            marker = f"fanout-{time.time_ns()}"
            ready: Any = multiprocessing.Queue()
            results: Any = multiprocessing.Queue()
            release = multiprocessing.Event()
            url = f"{s.base_url}/api/v1/sessions/{session}/events"
            procs = [
                multiprocessing.Process(
                    target=_subscribers,
                    args=((url, headers, total // processes, marker, ready, results, release),),
                )
                for _ in range(processes)
            ]
            for proc in procs:
                proc.start()
            connected = answered = 0
            deadline = time.monotonic() + 120
            while answered < total and time.monotonic() < deadline:
                try:
                    outcome = await asyncio.to_thread(ready.get, True, 1)
                except queue.Empty:
                    continue
                answered += 1
                connected += outcome
            await asyncio.sleep(1)
            # The ingress's CPU from the POST until every delivery is in: steadier than the delays
            # on a shared machine, where wall clock swings with the other tenants' load.
            assert s.server is not None
            cpu_before = cpu_seconds(s.server.pid)
            # The subscribers' processes share the 2 cores with the ingress: their CPU per
            # received event says whether the client side is what delays the delivery.
            client_pids = [proc.pid for proc in procs if proc.pid is not None]
            clients_before = sum(sum(cpu_seconds(pid)) for pid in client_pids)
            posted = time.time()
            await client.post(
                f"/api/v1/sessions/{session}/message", json={"content": marker}, headers=headers
            )
            answered_at = time.time()
            delays: list[float] = []
            failures: dict[str, int] = {}
            retries: dict[str, int] = {}
            for _ in procs:
                received, failed, retried = await asyncio.to_thread(results.get, True, 150)
                delays += [at - posted for at in received]
                for tally, more in ((failures, failed), (retries, retried)):
                    for name, n in more.items():
                        tally[name] = tally.get(name, 0) + n
            user, system = cpu_seconds(s.server.pid)
            ingress_user, ingress_sys = user - cpu_before[0], system - cpu_before[1]
            clients_cpu = sum(sum(cpu_seconds(pid)) for pid in client_pids) - clients_before
            release.set()
            logged_at = await _reply_logged(s.env, session, marker)
            for proc in procs:
                proc.join(10)
            await client.delete(f"/api/v1/sessions/{session}", headers=headers)
    delivery = summary_ms(delays)
    figures = {
        **delivery,
        "subscribers": total,
        "connected": connected,
        "delivered": len(delays),
        "failures": failures,
        "retries": retries,
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
