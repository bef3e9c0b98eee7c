"""Redis dies mid-traffic and comes back: the ingress answers 503 with Retry-After (never a 500),
/ready fails, and afterwards everything works again without restarting anything."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from api.sse import DRAIN_RETRY_MS
from events import wire
from events.batch import RedisBatch
from events.connection import batch_redis, dedicated_redis, pooled_redis, thread_redis
from tests.fixtures.partition import partition_to
from tests.fixtures.stack import Stack, free_port, spawn, stop, wait_ready
from tests.test_skeleton_e2e import ECHO

pytestmark = pytest.mark.timeout(240)


@dataclass
class RedisServer:
    """A real redis-server of this test's own, on a free port, that the test may kill."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    # With an append-only file, what was written before a stop is there after the restart.
    appendonly: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
            ],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
            finally:
                client.close()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """A clean shutdown (the append-only file, if any, is flushed)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


def STACK_ENV(request: pytest.FixtureRequest) -> dict[str, str]:
    return {"AGENTAPI_REDIS_URL": request.getfixturevalue("own_redis").url}


def reply_to(client: httpx.Client, stack: Stack, prompt: str, deadline: float = 60) -> str:
    """Starts an echo session with ``prompt`` and returns the agent's reply, then ends the session."""
    headers = stack.headers()
    created = client.post("/api/v1/sessions", json={**ECHO, "prompt": prompt}, headers=headers)
    assert created.status_code == 202, created.text
    session_id = created.json()["id"]
    try:
        until = time.monotonic() + deadline
        while time.monotonic() < until:
            listed = client.get(f"/api/v1/sessions/{session_id}/messages", headers=headers).json()
            replies = [m["content"] for m in listed["messages"] if m["content"].startswith("echo:")]
            if replies:
                return str(replies[0])
            time.sleep(0.25)
        raise AssertionError(f"no reply to {prompt!r}")
    finally:
        client.delete(f"/api/v1/sessions/{session_id}", headers=headers)


def test_redis_outage_is_a_503_and_recovery_needs_no_restart(stack: Stack, own_redis: RedisServer) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        headers = stack.headers()
        assert reply_to(client, stack, "before") == "echo: before"
        before = client.get("/api/v1/sessions", headers=headers).json()["sessions"][0]["id"]

        own_redis.kill()
        # What needs Redis (starting work, following a session) answers 503 with Retry-After.
        needs_redis = [
            ("POST", "/api/v1/sessions", {**ECHO, "prompt": "during"}),
            ("POST", "/api/v1/chat", {"content": "during", "agent_type": "custom", "custom_agent": "echo"}),
            ("GET", f"/api/v1/sessions/{before}/events", None),
        ]
        for _ in range(3):
            for method, path, body in needs_redis:
                response = client.request(method, path, json=body, headers=headers)
                assert response.status_code == 503, (method, path, response.status_code, response.text)
                assert int(response.headers["Retry-After"]) > 0
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.json()["status"] == 503
        # What only needs PostgreSQL keeps working; the sessions refused above are not left behind
        # half-started (they would count against the user's session quota forever).
        listed = client.get("/api/v1/sessions?limit=100", headers=headers)
        assert listed.status_code == 200
        refused = [s for s in listed.json()["sessions"] if s["id"] != before]
        assert len(refused) == 6
        assert {(s["status"], s["end_reason"]) for s in refused} == {
            ("failed", "not_started:event_bus_unavailable")
        }
        assert client.get("/api/v1/prompts", headers=headers).status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        assert ready.json()["checks"]["redis"].startswith("unavailable")
        assert ready.json()["checks"]["database"] == "ok"
        assert client.get("/health").status_code == 200

        own_redis.start()  # empty: streams, groups, queues and leases are all gone
        until = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < until, "the ingress did not notice Redis came back"
            time.sleep(0.25)
        assert client.get("/api/v1/sessions", headers=headers).status_code == 200
        # The workers reconnected and recreated their consumer groups: new work is done again.
        assert reply_to(client, stack, "after") == "echo: after"

    statuses = stack.access_statuses()
    assert statuses and not [status for status in statuses if status >= 500 and status != 503]


async def test_sigterm_ends_sse_streams_with_a_reconnect_hint(stack: Stack, own_redis: RedisServer) -> None:
    """A second ingress on the same system is stopped while a client follows a session: the stream
    ends with a short ``retry:`` at once, well before uvicorn's grace period, and the process exits."""
    port = free_port()
    server = spawn(["serve", "--port", str(port)], stack.env, stack.log_file)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, server)
        headers = stack.headers()
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            created = await client.post("/api/v1/sessions", json={**ECHO, "prompt": "drain"}, headers=headers)
            assert created.status_code == 202, created.text
            session_id = created.json()["id"]
            lines: list[str] = []
            async with client.stream(
                "GET", f"/api/v1/sessions/{session_id}/events", headers=headers
            ) as stream:
                async for line in stream.aiter_lines():
                    lines.append(line)
                    if line.startswith("data:") and "echo: drain" in line:
                        started = time.monotonic()
                        server.send_signal(signal.SIGTERM)
                # The stream ended (the server closed it), well inside the 10 s grace period.
                assert time.monotonic() - started < 8
            assert ": shutting down: reconnect" in lines and f"retry: {DRAIN_RETRY_MS}" in lines
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert server.wait(timeout=15) in (0, -signal.SIGTERM)
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as other:
            await other.delete(f"/api/v1/sessions/{session_id}", headers=headers)
    finally:
        stop(server)


async def test_clients_of_their_own_pool_take_idle_connections_afresh_after_a_restart(tmp_path: Path) -> None:
    """The clients outside the bounded pool (a worker's input-stream reader and loop reader, its
    dispatchers and Dramatiq's broker) also replace a connection a restarted Redis closed: with
    maintenance notifications left on ("auto"), the reader's first read afterwards failed."""
    server = RedisServer(free_port(), tmp_path)
    server.start()
    reader, blocking = dedicated_redis(server.url), thread_redis(server.url, decode_responses=True)
    try:
        await reader.set("key", 1)
        await asyncio.to_thread(blocking.set, "key", 1)
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)
        assert await reader.set("key", 2)
        assert await asyncio.to_thread(blocking.set, "key", 3)
    finally:
        await reader.aclose()
        blocking.close()
        server.kill()


async def test_pooled_connections_idle_through_a_restart_are_taken_afresh(tmp_path: Path) -> None:
    """Each idle connection of a pool, closed by a Redis that restarted, is replaced when next taken,
    not handed out to fail its caller's command (redis-py skips that check while maintenance
    notifications may be on: a session host's first emit failed so, and its session lost its prompt)."""
    server = RedisServer(free_port(), tmp_path)
    server.start()
    clients = [pooled_redis(server.url, wait_seconds=5), batch_redis(server.url, wait_seconds=5)]
    try:
        for client in clients:
            # Eight connections in use at once, then idle in the pool.
            await asyncio.gather(*(client.set(f"key{i}", i) for i in range(8)))
        # In a thread: the clients' event loop runs meanwhile and sees their sockets closed, as in
        # any outage.
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)
        for client in clients:
            answers = await asyncio.gather(
                *(client.set(f"key{i}", i) for i in range(8)), return_exceptions=True
            )
            assert answers == [True] * 8
    finally:
        for client in clients:
            await client.aclose()
        server.kill()


async def test_after_a_silent_partition_one_timed_out_read_opens_the_others_afresh(
    redis_url: str, redis_prefix: str
) -> None:
    """A partition that cuts without FIN or RST leaves every connection over it open and mute. The
    first read that times out, in any client of the process (a loop reader's pipeline past its
    deadline, a pooled command's socket timeout), drops the process's other connections to that
    Redis: the commands after it all get fresh ones. Before, each dead idle connection cost the
    command that took it a timeout in its turn (here 8 of the 10 commands after each timeout)."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with partition_to(port) as partition:
        pooled = pooled_redis(partition.url, wait_seconds=5, socket_timeout=0.5)
        batched = batch_redis(partition.url, wait_seconds=5)
        batch = RedisBatch(batched, deadline=0.5)
        reader = dedicated_redis(partition.url, socket_timeout=0.5)
        key = f"{redis_prefix}k"

        async def commands() -> list[object]:
            """Eight pooled commands at once (eight connections), one batch's and one reader's."""
            return await asyncio.gather(
                *(pooled.set(f"{key}{i}", i) for i in range(8)),
                batch.execute(lambda pipe: pipe.incr(key)),
                reader.ping(),
                return_exceptions=True,
            )

        async def late_pipeline() -> None:
            async with reader.pipeline(transaction=False) as pipe:
                await wire.execute_within(pipe.ping(), 0.5)

        try:
            assert await commands() == [True] * 8 + [[1], True]
            for count, timing_out in enumerate((late_pipeline, lambda: pooled.get(key)), start=2):
                assert partition.cut()
                with pytest.raises(redis.TimeoutError):
                    await timing_out()
                assert await commands() == [True] * 8 + [[count], True]
        finally:
            for client in (pooled, batched, reader):
                await client.aclose()


async def test_a_read_given_up_or_a_wait_for_a_connection_opens_nothing_afresh(redis_url: str) -> None:
    """Only a late reply drops connections: a read its caller cancels (an agent that hung up) and a
    pipeline whose deadline passes while it waits for a free connection leave the others open."""
    pooled = pooled_redis(redis_url, wait_seconds=5)
    batched = batch_redis(redis_url, wait_seconds=5)
    reader = dedicated_redis(redis_url)
    try:
        before = await pooled.client_id()
        blocked = asyncio.create_task(reader.blpop([f"agentapi-test-{os.getpid()}:never"], timeout=2))
        await asyncio.sleep(0.1)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        pool = batched.connection_pool
        pool.max_connections = 1
        held = await pool.get_connection()
        try:
            async with batched.pipeline(transaction=False) as pipe:
                with pytest.raises(redis.TimeoutError):
                    await wire.execute_within(pipe.ping(), 0.2)
        finally:
            await pool.release(held)
        assert await pooled.client_id() == before
    finally:
        for client in (pooled, batched, reader):
            await client.aclose()
