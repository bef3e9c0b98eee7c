"""/metrics after real traffic through the running system: every family has a nonzero series."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid

import httpx
import pytest
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from events.streams import DISPATCH_GROUP, Names, WorkKind
from tests.fixtures.stack import Stack, stop
from tests.test_mcp_tools import FASTMCP_STDIO, call, create_config
from tests.test_skeleton_e2e import ECHO, agent_said

pytestmark = pytest.mark.timeout(180)

STACK_ENV = {
    "AGENTAPI_MCP_STDIO_ALLOWLIST": json.dumps([[sys.executable, "-m", "tests.fakes.mcp_server"]]),
    "AGENTAPI_METRICS_TOKEN": "scrape-me",
}
SCRAPE = {"Authorization": "Bearer scrape-me"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


async def test_metrics_need_the_scrape_token(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, stack.headers()):
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 401
            assert response.headers["content-type"].startswith("application/problem+json")


async def dispatcher_group_created(stack: Stack, kind: WorkKind) -> None:
    """Wait until a started worker's dispatcher has made its consumer group on the work stream."""
    redis = Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    stream = Names(stack.env["AGENTAPI_REDIS_PREFIX"]).work(kind)
    try:
        async with asyncio.timeout(60):
            while True:
                with contextlib.suppress(ResponseError):  # no such stream yet
                    if any(g["name"] == DISPATCH_GROUP for g in await redis.xinfo_groups(stream)):
                        return
                await asyncio.sleep(0.1)
    finally:
        await redis.aclose()


async def test_every_family_counts_real_traffic(stack: Stack) -> None:
    stack.start_worker("tools", "audit")
    await asyncio.to_thread(stack.let_members_add_stdio)  # the member below adds a stdio server
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        headers = stack.headers()
        created = await client.post("/api/v1/sessions", json={**ECHO, "prompt": "count me"}, headers=headers)
        assert created.status_code == 202, created.text
        session_id = created.json()["id"]
        async with aconnect_sse(
            client, "GET", f"/api/v1/sessions/{session_id}/events", headers=headers
        ) as source:
            said = agent_said("echo: count me")
            async for sse in source.aiter_sse():
                if sse.data and said(sse):
                    break
            # While the stream is open and the session lives, the gauges see them.
            live = await scrape(client)
        assert value(live, "agentapi_sse_subscribers") >= 1
        assert value(live, "agentapi_active_sessions", agent_type="custom") >= 1
        assert value(live, "agentapi_queue_depth", queue="sessions", state="in_flight") >= 1

        config = await create_config(client, stack, **FASTMCP_STDIO)
        assert await call(client, stack, session_id, config["id"], "add", a=2, b=3)

        # A pool that is down: its work waits in its stream, visible as consumer-group lag.
        default_pool = stack.start_worker("default")
        await dispatcher_group_created(stack, WorkKind.DEFAULT)
        stop(default_pool)
        leaver = uuid.uuid4()
        leaver_headers = stack.headers(user_id=leaver)
        assert (await client.get("/api/v1/sessions", headers=leaver_headers)).status_code == 200
        erased = await client.delete(f"/api/v1/users/{leaver}", headers=leaver_headers)
        assert erased.status_code == 204, erased.text

        await client.delete(f"/api/v1/sessions/{session_id}", headers=headers)
        after = await scrape(client)

    http = {"path": "/api/v1/sessions", "method": "POST", "status_code": "202"}
    assert value(after, "agentapi_http_requests_total", **http) >= 1
    assert value(after, "agentapi_http_request_duration_seconds_count", **http) >= 1
    assert value(after, "agentapi_events_published_total", stream="work:sessions") >= 1
    assert value(after, "agentapi_events_published_total", stream="session_log") >= 3
    assert value(after, "agentapi_events_consumed_total", stream="work:sessions", outcome="acked") >= 1
    assert value(after, "agentapi_events_consumed_total", stream="work:tools", outcome="acked") >= 1
    assert value(after, "agentapi_events_consumed_total", stream="work:audit", outcome="acked") >= 1
    assert value(after, "agentapi_stream_length", stream="work:sessions") >= 1
    assert value(after, "agentapi_stream_lag", stream="work:default", group="dispatchers") >= 1
    assert (
        "agentapi_stream_pending",
        frozenset({("stream", "work:sessions"), ("group", "dispatchers")}),
    ) in after
    actor = {"actor": "call_tool", "outcome": "ok"}
    assert value(after, "agentapi_actor_duration_seconds_count", **actor) >= 1
    assert value(after, "agentapi_actor_duration_seconds_sum", **actor) > 0
    assert value(after, "agentapi_actor_duration_seconds_bucket", le="+Inf", **actor) == value(
        after, "agentapi_actor_duration_seconds_count", **actor
    )
    assert value(after, "agentapi_tool_calls_total", outcome="success") >= 1
    assert value(after, "agentapi_cluster_metrics_up") == 1
