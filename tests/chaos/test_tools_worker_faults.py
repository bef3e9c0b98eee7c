"""Faults on the MCP tools path: an agent's gateway call (ingress → tools work stream → tools worker
→ a real MCP server → reply stream) through a Redis outage, the kill -9 of the tools worker holding
the call, and a Redis restart under the tools worker's subscription to configuration changes.

What the design promises (workers/dispatcher.py, ``DirectLane``): a waited-on call is acknowledged
once it has started in a tools worker, and is never redelivered (tool calls are not idempotent on
the server's side); a caller whose worker died gets "no answer in time" once the gateway's wait
(the call timeout and its margin) is over, never a hang and never a second run of the call.

Real processes on a redis-server of the test's own, without persistence (a restart comes back empty:
streams, consumer groups, gateway tokens and cached tool lists are gone): `agentapi serve`,
`agentapi worker --queues sessions` (an echo session, whose host issues the gateway token) and
`agentapi worker --queues tools`; the MCP server is tests/fakes/mcp_server.py over Streamable HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from api.mcp_gateway import INTERRUPTED, NO_ANSWER
from events.streams import FIELD, Names
from tests.fixtures.partition import partition_to
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, running_stack, stop
from tests.test_mcp_loaded_configs import ask, version_of
from tests.test_mcp_tools import (  # noqa: F401 - http_server: the MCP server fixture
    create_config,
    gateway_config,
    gateway_config_written,
    http_server,
    start_session,
)
from tests.test_outages import RedisServer, own_redis  # noqa: F401 - own_redis: the fixture
from tests.waiting import until, until_sync

pytestmark = pytest.mark.timeout(240)

CALL_TIMEOUT_SECONDS = 5
# The gateway's wait past the call timeout (15 s by default): above what a tools worker takes to start
# here (~5 s: a call waits in the stream for it) and to notice a partition (its read's 6 s deadline).
WAIT_MARGIN_SECONDS = 8
# How long the gateway waits for a tools worker's answer (api/mcp_gateway.py).
GATEWAY_WAIT_SECONDS = CALL_TIMEOUT_SECONDS + WAIT_MARGIN_SECONDS
# The agent's own patience: an answer later than this is a hang.
CALLER_TIMEOUT_SECONDS = GATEWAY_WAIT_SECONDS + 30
OUTAGE_SECONDS = 6
# The progress tool reports this many steps, 0.05 s apart: a call that lasts a few seconds.
SLOW_STEPS = 60


@pytest.fixture(scope="module")
def tools_stack(
    own_redis: RedisServer,  # noqa: F811
    pg_urls: DbUrls,
    jwt_secret: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    overrides = {
        "AGENTAPI_REDIS_URL": own_redis.url,
        "AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true",
        "AGENTAPI_MCP_CALL_TIMEOUT_SECONDS": str(CALL_TIMEOUT_SECONDS),
        "AGENTAPI_MCP_GATEWAY_WAIT_MARGIN_SECONDS": str(WAIT_MARGIN_SECONDS),
        "AGENTAPI_MAX_SESSIONS_PER_USER": "10",
    }
    with running_stack(pg_urls, jwt_secret, tmp_path_factory.mktemp("stack"), overrides) as stack:
        start_tools_worker(stack)
        yield stack


def start_tools_worker(stack: Stack, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    serving = stack.logs().count("serving tools")
    worker = stack.start_worker("tools", env=env)
    until_sync(lambda: stack.logs().count("serving tools") > serving, 60, "the tools worker serves")
    return worker


def stop_tools_workers(stack: Stack) -> None:
    for worker in stack.workers:
        if worker.args[-1] == "tools":  # type: ignore[index]
            stop(worker)


@dataclass(frozen=True)
class Gateway:
    """A live echo session's MCP gateway, and the configuration whose tools it lists."""

    session_id: str
    url: str
    token: str
    config: dict[str, Any]

    def tool(self, name: str) -> str:
        return f"{self.config['name']}__{name}"


@pytest.fixture
async def gateway(tools_stack: Stack, http_server: tuple[str, str]) -> AsyncIterator[Gateway]:  # noqa: F811
    url, bearer = http_server
    headers = tools_stack.headers()
    async with httpx.AsyncClient(base_url=tools_stack.base_url, timeout=60) as client:
        config = await create_config(
            client,
            tools_stack,
            scope="user",
            transport="http",
            endpoint_url=url,
            auth_type="bearer",
            bearer_token=bearer,
        )
        session_id = await start_session(client, tools_stack)
        await until(lambda: gateway_config_written(tools_stack, session_id), 60, "the gateway is configured")
        entry = gateway_config(tools_stack, session_id)
        token = str(entry["headers"]["Authorization"]).removeprefix("Bearer ")  # type: ignore[index]
        try:
            yield Gateway(session_id, str(entry["url"]), token, config)
        finally:
            await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)


@dataclass(frozen=True)
class Answer:
    status: int
    seconds: float
    # The tool's text, or the error's; None when the status is not 200.
    text: str | None
    is_error: bool
    body: str
    retry_after: str | None = None


async def gateway_call(gw: Gateway, tool: str, arguments: dict[str, Any]) -> Answer:
    """One ``tools/call`` as an agent's MCP client sends it, answered within the caller's patience."""
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": gw.tool(tool), "arguments": arguments},
    }
    headers = {"Authorization": f"Bearer {gw.token}", "Accept": "application/json, text/event-stream"}
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=CALLER_TIMEOUT_SECONDS) as http:
        try:
            response = await http.post(gw.url, json=request, headers=headers)
        except httpx.TimeoutException:
            raise AssertionError(f"{tool}: no answer within {CALLER_TIMEOUT_SECONDS} s (a hang)") from None
    seconds = time.monotonic() - started
    if response.status_code != 200:
        return Answer(
            response.status_code, seconds, None, True, response.text, response.headers.get("Retry-After")
        )
    reply = response.json()
    if "error" in reply:
        return Answer(200, seconds, str(reply["error"].get("message")), True, response.text)
    result = reply["result"]
    text = " ".join(block.get("text", "") for block in result.get("content", []))
    return Answer(200, seconds, text, bool(result.get("isError")), response.text)


async def answered_ok(gw: Gateway, text: str) -> None:
    answer = await gateway_call(gw, "echo", {"text": text})
    assert answer.status == 200 and not answer.is_error and text in (answer.text or ""), answer.body


async def answered_ok_soon(gw: Gateway, text: str, seconds: float = 30) -> float:
    """Retries until an echo call succeeds; how long that took. Each failure on the way must be a
    clear one, as during the fault, or a 401 while the session's host has not yet written its
    gateway token's key again (its next heartbeat, after Redis came back empty)."""
    started = time.monotonic()
    while True:
        answer = await gateway_call(gw, "echo", {"text": text})
        if answer.status == 200 and not answer.is_error:
            assert text in (answer.text or ""), answer.body
            return time.monotonic() - started
        if answer.status != 401:
            assert_clear(answer, INTERRUPTED, NO_ANSWER)
        assert time.monotonic() - started < seconds, f"no successful call {seconds} s after: {answer.body}"
        await asyncio.sleep(0.5)


def assert_clear(answer: Answer, *texts: str) -> None:
    """A failed call is told so plainly: a 503 to retry later, or a tool error with one of the
    gateway's own ``texts`` (never a platform exception's text: the agent is a tenant's program)."""
    if answer.status == 503:
        assert answer.retry_after and int(answer.retry_after) > 0, answer
        return
    assert answer.status == 200 and answer.is_error and answer.text in texts, answer


def server_errors(stack: Stack) -> list[int]:
    return [status for status in stack.access_statuses() if status >= 500 and status != 503]


# 1. Redis outages.


async def test_gateway_calls_through_a_redis_outage_idle_and_in_flight(
    tools_stack: Stack,
    own_redis: RedisServer,  # noqa: F811
    gateway: Gateway,
) -> None:
    await answered_ok(gateway, "before")

    # Idle: the tools worker's loop reader is blocked in its read when Redis goes.
    own_redis.kill()
    during: list[Answer] = []
    down_at = time.monotonic()
    while time.monotonic() - down_at < OUTAGE_SECONDS:
        during.append(await gateway_call(gateway, "echo", {"text": "during"}))
        await asyncio.sleep(0.5)
    own_redis.start()  # empty
    idle_back = await answered_ok_soon(gateway, "after the idle outage")
    for answer in during:
        assert_clear(answer, INTERRUPTED)

    # In flight: calls under way (the upstream is reporting progress) when Redis goes.
    calls = [asyncio.create_task(gateway_call(gateway, "progress", {"steps": SLOW_STEPS})) for _ in range(3)]
    await until(lambda: progress_reported(tools_stack, gateway.session_id), 30, "the calls are under way")
    own_redis.kill()
    await asyncio.sleep(OUTAGE_SECONDS)
    own_redis.start()
    in_flight = await asyncio.gather(*calls)
    for answer in in_flight:
        if answer.is_error:
            assert_clear(answer, INTERRUPTED)
    in_flight_back = await answered_ok_soon(gateway, "after the in-flight outage")
    await answered_ok(gateway, "and again")

    assert not server_errors(tools_stack)
    print(
        f"\nRedis down {OUTAGE_SECONDS} s (empty restart): {len(during)} calls during it answered in"
        f" {max(a.seconds for a in during):.1f} s at most ({sorted({a.status for a in during})});"
        f" a call succeeded {idle_back:.1f} s after it came back. In flight: answered in"
        f" {max(a.seconds for a in in_flight):.1f} s at most"
        f" ({sum(not a.is_error for a in in_flight)} of {len(in_flight)} ok); a new call succeeded"
        f" {in_flight_back:.1f} s after Redis came back"
    )


def progress_reported(stack: Stack, session_id: str) -> bool:
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    client = redis.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    try:
        logged = client.xrange(names.session_log(session_id))
    except redis.ConnectionError:
        return False
    finally:
        client.close()
    return any(json.loads(fields[FIELD])["type"] == "tool_call.progress" for _, fields in logged)


# 2. kill -9 of the tools worker holding a call.


async def test_a_killed_tools_worker_fails_its_calls_in_time_and_another_serves_the_next(
    tools_stack: Stack, gateway: Gateway
) -> None:
    await answered_ok(gateway, "before")
    # The module's tools worker goes (cleanly); the victim is then the only one reading the stream.
    stop_tools_workers(tools_stack)
    victim = start_tools_worker(tools_stack)
    await answered_ok(gateway, "on the victim")

    calls = [asyncio.create_task(gateway_call(gateway, "progress", {"steps": SLOW_STEPS})) for _ in range(2)]
    await until(lambda: progress_reported(tools_stack, gateway.session_id), 30, "the calls are under way")
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert victim.wait(timeout=30) == -signal.SIGKILL
    # Sent while no tools worker runs: it waits in the stream for the next one.
    sent_at = time.monotonic()
    waiting = asyncio.create_task(gateway_call(gateway, "echo", {"text": "while none runs"}))
    await asyncio.sleep(1)
    await asyncio.to_thread(start_tools_worker, tools_stack)
    serving_after = time.monotonic() - sent_at

    in_hand = await asyncio.gather(*calls)
    for answer in in_hand:
        # Not redelivered: the call had started upstream, and a tool call is never run twice.
        assert_clear(answer, NO_ANSWER)
    waited = await waiting
    if not waited.is_error:
        assert waited.status == 200 and "while none runs" in (waited.text or ""), waited
    else:
        # Only a machine too busy to start a worker well within the gateway's wait may leave it
        # unanswered, and the caller is told so.
        assert serving_after >= GATEWAY_WAIT_SECONDS - 5, waited
        assert_clear(waited, NO_ANSWER)
    await answered_ok(gateway, "after")
    assert not server_errors(tools_stack)
    print(
        f"\nkill -9 of the tools worker: its {len(in_hand)} calls in hand failed"
        f" {max(a.seconds for a in in_hand):.1f} s after they were sent (the gateway waits"
        f" {GATEWAY_WAIT_SECONDS} s); the call sent while no worker ran was answered"
        f" ({'ok' if not waited.is_error else waited.text}) {waited.seconds:.1f} s after it was sent,"
        f" by the worker serving {serving_after:.1f} s after; {time.monotonic() - killed_at:.1f} s since the kill"
    )


# 3. Configuration changes after a Redis restart.


async def test_configuration_changes_reach_the_tools_worker_after_a_redis_restart(
    tools_stack: Stack,
    own_redis: RedisServer,  # noqa: F811
    gateway: Gateway,
    http_server: tuple[str, str],  # noqa: F811
) -> None:
    config = gateway.config
    listed = version_of(config)
    owner = (tools_stack.org_id, tools_stack.user_id)
    assert (await ask(tools_stack, config, listed, *owner)).payload["ok"] is True

    own_redis.kill()
    await asyncio.sleep(2)
    own_redis.start()
    back_at = time.monotonic()
    names = Names(tools_stack.env["AGENTAPI_REDIS_PREFIX"])
    channel = names.mcp_config_changes()

    def subscribed() -> bool:
        client = redis.Redis.from_url(own_redis.url)
        try:
            return bool(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))
        finally:
            client.close()

    await until(subscribed, 30, "the tools worker subscribed to configuration changes again")
    resubscribed = time.monotonic() - back_at
    # Loaded afresh and kept again, at the version the gateway listed.
    for _ in range(3):
        assert (await ask(tools_stack, config, listed, *owner)).payload["ok"] is True

    # An edit (a wrong token) and a delete each reach the worker: a call naming the version the
    # gateway listed before them is not served from what the worker had kept.
    url, _ = http_server
    headers = tools_stack.headers()
    async with httpx.AsyncClient(base_url=tools_stack.base_url, timeout=60) as client:
        edited = await client.put(
            f"/api/v1/mcp/configurations/{config['id']}",
            json={
                "name": config["name"],
                "scope": "user",
                "transport": "http",
                "endpoint_url": url,
                "auth_type": "bearer",
                "bearer_token": "not-the-token",
            },
            headers=headers,
        )
        assert edited.status_code == 200, edited.text
        after_edit = (await ask(tools_stack, config, listed, *owner)).payload
        assert after_edit["ok"] is False, after_edit
        deleted = await client.delete(f"/api/v1/mcp/configurations/{config['id']}", headers=headers)
        assert deleted.status_code in (200, 204), deleted.text
    after_delete = (await ask(tools_stack, config, listed, *owner)).payload
    assert after_delete["ok"] is False and after_delete["error_code"] == "not_found", after_delete
    print(f"\nthe tools worker subscribed again {resubscribed:.1f} s after Redis came back (empty)")


# 4. A partition between the tools worker and Redis.


async def test_the_tools_worker_reads_calls_again_after_a_partition(
    tools_stack: Stack,
    own_redis: RedisServer,  # noqa: F811
    gateway: Gateway,
) -> None:
    """The worker's connections to Redis go silent (no FIN, no RST: the far side forgot them) while
    its loop reader waits in its blocking read; new connections go through. The first call after the
    cut must be read and answered: not left in the stream behind a read that waits forever, nor lost
    to the dead connections idle in the worker's other clients (the loop reader's timeout drops them
    all; before, the breaker's read and the answer's write each lost a call, a gateway wait each)."""
    await answered_ok(gateway, "before")
    with partition_to(own_redis.port) as partition:
        # Only the worker behind the partition reads the tools stream.
        await asyncio.to_thread(stop_tools_workers, tools_stack)
        await asyncio.to_thread(start_tools_worker, tools_stack, {"AGENTAPI_REDIS_URL": partition.url})
        await answered_ok(gateway, "through the proxy")
        await asyncio.sleep(1.5)  # idle: the loop reader is in its blocking read
        assert partition.cut()
        cut_at = time.monotonic()
        await answered_ok(gateway, "after the partition")
        back = time.monotonic() - cut_at
        # Stopped behind the partition (its logs complete, the proxy outliving it); the module's last
        # test, so no tools worker is started again.
        await asyncio.to_thread(stop_tools_workers, tools_stack)
    # A call that failed on the worker's side before it started left nothing half done.
    assert "never awaited" not in tools_stack.logs()
    print(f"\nafter the partition a call succeeded {back:.1f} s after the cut")
