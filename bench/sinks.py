"""Events/s from the event log to a RabbitMQ queue through an event sink (notice → default worker →
drain → kombu with publisher confirms), beside raw kombu publishes of the same CloudEvents.

The events are made the way session hosts make them (append to a session's log, then a notice on the
default work stream), for 20 sessions at once; the clock runs from the first append to the last
message on the bound queue. Two anchors in the same run: kombu's own ``confirm_publish`` (a round trip
per message) and the sink's publisher (confirms awaited per batch) called directly."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from kombu import Connection, Exchange, Producer

from bench.harness import Row, stack, summary_ms
from events.cloudevents import encode, to_cloudevent
from events.envelope import Event, EventType
from events.sinks import Outgoing, publish
from schemas.settings import Settings
from tests.fixtures.rabbitmq import RabbitNode, running_node
from workers.context import WorkerContext

SESSIONS = 20
# What Stack.start_worker gives the default pool.
DEFAULT_WORKER_THREADS = 4


def _events(org_id: uuid.UUID, user_id: uuid.UUID, count: int) -> list[Event]:
    sessions = [uuid.uuid4() for _ in range(SESSIONS)]
    return [
        Event(
            type=EventType.MESSAGE_COMPLETED,
            org_id=org_id,
            user_id=user_id,
            session_id=sessions[index % SESSIONS],
            payload={"role": "agent", "content": f"reply {index}", "id": index},
        )
        for index in range(count)
    ]


def _wait_for(node: RabbitNode, queue: str, count: int, timeout: float) -> float:
    """Blocks until ``count`` messages sit on ``queue``; the moment it saw them (perf_counter)."""
    deadline = time.monotonic() + timeout
    with Connection(node.url()) as conn:
        channel = conn.default_channel
        while True:
            ready = channel.queue_declare(queue, passive=True).message_count
            if ready >= count:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ready} of {count} events arrived within {timeout:.0f} s")
            time.sleep(0.005)


def _raw_kombu(node: RabbitNode, exchange: str, bodies: list[bytes]) -> float:
    """kombu as documented: confirm_publish, one publish (and its confirm) after another."""
    with Connection(node.url(), transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn.default_channel, exchange=Exchange(exchange, type="topic", durable=True))
        started = time.perf_counter()
        for body in bodies:
            producer.publish(body, routing_key="raw", content_type="application/cloudevents+json")
        return time.perf_counter() - started


def _batched(node: RabbitNode, exchange: str, bodies: list[bytes]) -> float:
    messages = [Outgoing(str(index), "batched", body) for index, body in enumerate(bodies)]
    started = time.perf_counter()
    for at in range(0, len(messages), 500):
        publish("bench-anchor", node.url(), exchange, messages[at : at + 500], timeout=30)
    return time.perf_counter() - started


async def bench(quick: bool) -> list[Row]:
    count = 300 if quick else 3000
    with tempfile.TemporaryDirectory(prefix="agentapi-bench-rabbit-") as scratch:
        node_manager = running_node(Path(scratch))
        node = await asyncio.to_thread(node_manager.__enter__)
        try:
            platform_s, raw_s, batched_s, split = await _measure(node, count)
        finally:
            await asyncio.to_thread(node_manager.__exit__, None, None, None)
    platform_rate, raw_rate, batched_rate = count / platform_s, count / raw_s, count / batched_s
    details = {
        "events": count,
        "sessions": SESSIONS,
        "default_worker_threads": DEFAULT_WORKER_THREADS,
        # Where the time goes, from the newest 200 delivery rows: event → its row (dispatch and the
        # notify actor), row → confirmed by the broker (the drain).
        **split,
    }
    return [
        Row(
            "sinks",
            "events/s to RabbitMQ through a sink",
            round(platform_rate),
            "ev/s",
            "reference",
            None,
            details,
        ),
        Row(
            "sinks",
            f"vs raw kombu with confirm_publish ({raw_rate:,.0f} ev/s)",
            round(100 * platform_rate / raw_rate, 1),
            "%",
            "≥ 100 %",
            platform_rate >= raw_rate,
        ),
        Row(
            "sinks",
            "the sink's publisher alone (batched confirms)",
            round(batched_rate),
            "ev/s",
            "reference",
            None,
        ),
    ]


async def _measure(node: RabbitNode, count: int) -> tuple[float, float, float, dict[str, Any]]:
    exchange = "bench"
    queue = node.bind_queue(exchange, "bench.#")
    raw_queue = node.bind_queue(exchange, "raw")
    batched_queue = node.bind_queue(exchange, "batched")
    async with stack({"AGENTAPI_LOG_LEVEL": "WARNING"}) as s:
        await asyncio.to_thread(s.start_worker, "default")
        async with httpx.AsyncClient(base_url=s.base_url, timeout=60) as http:
            created = await http.post(
                "/api/v1/webhooks",
                json={
                    "name": "bench",
                    "direction": "sink",
                    "broker_url": node.url(),
                    "exchange": exchange,
                    "routing_key": "bench.{session_id}",
                    "event_types": ["message.completed"],
                },
                headers=s.headers(role="admin"),
            )
            created.raise_for_status()
        events = _events(s.org_id, s.user_id, count)
        # The session hosts' own path: WorkerContext.emit logs each result, then notifies the pool.
        hosts = WorkerContext(
            Settings(  # type: ignore[call-arg]
                environment="test",
                jwt_secret="bench",
                redis_url=s.env["AGENTAPI_REDIS_URL"],
                redis_prefix=s.env["AGENTAPI_REDIS_PREFIX"],
            )
        )
        # Warm the worker (its pools and the sink's connection) with one event first.
        await hosts.emit(_events(s.org_id, s.user_id, 1)[0])
        await asyncio.to_thread(_wait_for, node, queue, 1, 120)
        started = time.perf_counter()
        for event in events:
            await hosts.emit(event)
        emitted = time.perf_counter()
        arrived = await asyncio.to_thread(_wait_for, node, queue, count + 1, 600)
        await hosts.redis.aclose()
        async with httpx.AsyncClient(base_url=s.base_url, timeout=60) as http:
            listed = await http.get(
                "/api/v1/webhooks/deliveries", params={"limit": 200}, headers=s.headers(role="admin")
            )
        sent_at = {event.id: event.ts for event in events}
        rows = [row for row in listed.json() if row["event_id"] in sent_at]
        split = {
            "emit_s": round(emitted - started, 2),
            "notice_to_row": summary_ms(
                [
                    (datetime.fromisoformat(r["created_at"]) - sent_at[r["event_id"]]).total_seconds()
                    for r in rows
                ]
            ),
            "row_to_confirmed": summary_ms(
                [
                    (
                        datetime.fromisoformat(r["delivered_at"]) - datetime.fromisoformat(r["created_at"])
                    ).total_seconds()
                    for r in rows
                ]
            ),
        }
    bodies = [encode(to_cloudevent(event, "http://bench")) for event in events]
    raw_s = await asyncio.to_thread(_raw_kombu, node, exchange, bodies)
    batched_s = await asyncio.to_thread(_batched, node, exchange, bodies)
    for name in (raw_queue, batched_queue):
        assert len(await asyncio.to_thread(node.drain, name)) == count
    return arrived - started, raw_s, batched_s, split
