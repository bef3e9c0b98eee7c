"""MCP configurations a tools worker keeps loaded (workers/loaded_configs.py): over real Redis, the
cache itself (two ``LoadedConfigs`` stand for two workers); over the running stack, a real tools
worker asked the way the gateway asks (the version it listed) right after an edit, and by another
tenant."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis.asyncio
from redis.asyncio import Redis

from events.envelope import Event, EventType
from events.payloads import ToolCall
from events.results import await_reply
from events.streams import Names
from schemas.tables import McpConfiguration, utcnow
from services.mcp.changes import announce_change
from tests.fixtures.stack import Stack
from tests.pubsub_faults import cut_subscriptions
from tests.test_mcp_tools import create_config, http_server  # noqa: F401 - the MCP server fixture
from tests.waiting import until
from workers.loaded_configs import Loaded, LoadedConfigs, LoadedKey
from workers.mcp_client import ServerSpec

pytestmark = pytest.mark.timeout(180)

STACK_ENV = {"AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true"}
# Long enough that only a message (or a lost subscription) can explain a change in a test.
FOREVER = 300.0


def loaded_row(org_id: uuid.UUID, config_id: uuid.UUID) -> Loaded:
    row = McpConfiguration(
        id=config_id, org_id=org_id, scope="organization", name="cfg", transport="http", auth_type="none"
    )
    row.updated_at = utcnow()
    spec = ServerSpec(
        config_id=config_id,
        caller=None,
        version=row.updated_at,
        transport="http",
        endpoint_url="http://127.0.0.1:9/mcp",
        command=None,
        args=(),
        env=(),
        token=None,
    )
    return row, spec, None


async def subscribed(client: Any, names: Names) -> LoadedConfigs:
    cache = LoadedConfigs(client, names, kept_seconds=FOREVER)
    assert cache.get((uuid.uuid4(), None, uuid.uuid4()), None) is None  # starts the subscription
    await until(lambda: cache.caching, timeout=10, what="subscribed to configuration changes")
    return cache


@pytest.fixture
async def cache(aredis: Redis, names: Names) -> AsyncIterator[LoadedConfigs]:
    loaded = await subscribed(aredis, names)
    yield loaded
    await loaded.stop()


def kept(cache: LoadedConfigs, key: LoadedKey, loaded: Loaded) -> None:
    cache.put(key, loaded, cache.epoch, time.monotonic())


async def test_an_entry_serves_only_its_own_tenant_user_and_version(cache: LoadedConfigs) -> None:
    org, user, config = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    loaded = loaded_row(org, config)
    version = loaded[0].updated_at.isoformat()
    kept(cache, (org, user, config), loaded)
    assert cache.get((org, user, config), version) is loaded
    assert cache.get((uuid.uuid4(), user, config), version) is None
    assert cache.get((org, uuid.uuid4(), config), version) is None
    assert cache.get((org, None, config), version) is None
    assert cache.get((org, user, config), None) is None
    assert cache.get((org, user, config), "2020-01-01T00:00:00+00:00") is None


async def test_a_change_one_process_announces_reaches_every_worker_at_once(
    aredis: Redis, names: Names, cache: LoadedConfigs
) -> None:
    other = await subscribed(aredis, names)
    try:
        org, user, config, untouched = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        loaded, kept_too = loaded_row(org, config), loaded_row(org, untouched)
        version = loaded[0].updated_at.isoformat()
        for worker in (cache, other):
            kept(worker, (org, user, config), loaded)
            kept(worker, (org, None, config), loaded)
            kept(worker, (org, user, untouched), kept_too)
        await announce_change(aredis, names, config)
        for worker in (cache, other):
            await until(
                lambda worker=worker: worker.get((org, user, config), version) is None,
                timeout=10,
                what="the change heard",
            )
            assert worker.get((org, None, config), version) is None
            assert worker.get((org, user, untouched), kept_too[0].updated_at.isoformat()) is kept_too
    finally:
        await other.stop()


async def test_a_load_that_raced_a_change_is_not_kept(
    aredis: Redis, names: Names, cache: LoadedConfigs
) -> None:
    org, config = uuid.uuid4(), uuid.uuid4()
    loaded = loaded_row(org, config)
    epoch = cache.epoch  # the load starts
    await announce_change(aredis, names, config)  # the row changes while it reads
    await until(lambda: cache.epoch != epoch, timeout=10, what="the change heard")
    cache.put((org, None, config), loaded, epoch, time.monotonic())
    assert cache.get((org, None, config), loaded[0].updated_at.isoformat()) is None


async def test_a_lost_subscription_forgets_everything(redis_url: str, aredis: Redis, names: Names) -> None:
    name = f"loaded-configs-test-{uuid.uuid4().hex[:8]}"
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True, client_name=name)
    try:
        cache = await subscribed(client, names)
        org, config = uuid.uuid4(), uuid.uuid4()
        loaded = loaded_row(org, config)
        version = loaded[0].updated_at.isoformat()
        kept(cache, (org, None, config), loaded)
        epoch = cache.epoch
        await cut_subscriptions(aredis, name)
        await until(lambda: cache.epoch != epoch, timeout=10, what="the lost subscription noticed")
        await until(lambda: cache.caching, timeout=10, what="subscribed again")
        # Changes announced meanwhile were missed: what was loaded before is read afresh.
        assert cache.get((org, None, config), version) is None
        await cache.stop()
    finally:
        await client.aclose()


# The running stack: a real tools worker.


@pytest.fixture(scope="module")
def tools_stack(stack: Stack) -> Stack:
    stack.start_worker("tools")
    return stack


async def ask(
    stack: Stack, config: dict[str, Any], version: str, org_id: uuid.UUID, user_id: uuid.UUID
) -> Event:
    """A tool call as the gateway sends it (the version it listed), answered on a reply stream."""
    request = Event(
        type=EventType.TOOL_CALL_REQUESTED,
        org_id=org_id,
        user_id=user_id,
        session_id=None,
        correlation_id=secrets.token_hex(8),
        payload=ToolCall(
            config_id=str(config["id"]), version=version, tool="echo", arguments={"text": "hi"}, reply=True
        ).payload(),
    )
    client = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    async with client:
        answer = await await_reply(client, Names(stack.env["AGENTAPI_REDIS_PREFIX"]), request.id, 60, request)
    assert answer is not None
    return answer


def version_of(config: dict[str, Any]) -> str:
    return datetime.fromisoformat(str(config["updated_at"])).isoformat()


async def test_an_edit_reaches_the_next_call_at_once_and_no_tenant_gets_anothers_config(
    tools_stack: Stack,
    http_server: tuple[str, str],  # noqa: F811
) -> None:
    url, bearer = http_server
    body = {
        "scope": "user",
        "transport": "http",
        "endpoint_url": url,
        "auth_type": "bearer",
        "bearer_token": bearer,
    }
    async with httpx.AsyncClient(base_url=tools_stack.base_url, timeout=60) as client:
        config = await create_config(client, tools_stack, **body)
        listed = version_of(config)
        owner = (tools_stack.org_id, tools_stack.user_id)
        for _ in range(3):  # loaded once, then kept for the owner
            assert (await ask(tools_stack, config, listed, *owner)).payload["ok"] is True

        # Another organization, and another user of the same one, naming the same id and version.
        for org_id, user_id in [(uuid.uuid4(), uuid.uuid4()), (tools_stack.org_id, uuid.uuid4())]:
            refused = await ask(tools_stack, config, listed, org_id, user_id)
            assert refused.payload["ok"] is False
            assert refused.payload["error_code"] == "not_found"
            assert bearer not in refused.to_wire()
        assert (await ask(tools_stack, config, listed, *owner)).payload["ok"] is True

        # Disabled: a call naming the version listed before (the gateway's listing lags the edit by
        # up to 2 s) is refused as soon as the edit is answered, not once a cached load expires.
        disabled = await client.put(
            f"/api/v1/mcp/configurations/{config['id']}",
            json={**body, "name": config["name"], "enabled": False},
            headers=tools_stack.headers(),
        )
        assert disabled.status_code == 200, disabled.text
        stale = await ask(tools_stack, config, listed, *owner)
        assert stale.payload["ok"] is False
        assert stale.payload["error_code"] == "not_found"

        # Enabled again with a token the server refuses: the next call uses it.
        edited = await client.put(
            f"/api/v1/mcp/configurations/{config['id']}",
            json={**body, "name": config["name"], "bearer_token": "not-the-token"},
            headers=tools_stack.headers(),
        )
        assert edited.status_code == 200, edited.text
        refused = await ask(tools_stack, config, version_of(edited.json()), *owner)
        assert refused.payload["ok"] is False
        assert refused.payload["error_code"] == "unauthorized"
