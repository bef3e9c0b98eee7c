"""Event sinks on a real RabbitMQ node of the test run's own: a session's events arrive on a bound queue
in log order, once each, as CloudEvents the `cloudevents` package accepts; an outage of the broker
delays them without loss or duplicates; refused credentials make the sink `failing` and park the
events in the dead-letter view until they are redelivered."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import redis
from cloudevents.core.formats.json import JSONFormat

from events.cloudevents import CONTENT_TYPE, encode, to_cloudevent
from events.envelope import Event, EventType
from events.sinks import check_routing_key, redacted, routing_key
from schemas.settings import Settings
from schemas.webhook_signing import verify
from services.egress import EgressRefused, check_broker_url
from tests.fixtures.postgres import DbUrls
from tests.fixtures.rabbitmq import RabbitNode
from tests.fixtures.stack import Stack, seed_async
from tests.test_skeleton_e2e import ECHO, agent_said, read_events
from tests.test_webhooks import Receiver
from tests.waiting import until

pytestmark = pytest.mark.timeout(240)
STACK_ENV = {
    "AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true",
    # Attempts span about 12 s, and a refused sink's wait for the dead-letter view is that: the outage
    # below lasts two failed attempts (an attempt on a stopped broker also waits out the client's
    # reconnect, about 2 s, so twelve of them take 30 s or more).
    "AGENTAPI_SINK_MAX_ATTEMPTS": "12",
    "AGENTAPI_SINK_BACKOFF_SECONDS": "0.3",
    "AGENTAPI_SINK_MAX_BACKOFF_SECONDS": "1",
    "AGENTAPI_SINK_TIMEOUT_SECONDS": "3",
}
SUBSCRIBED = ["message.completed", "session.ended"]


@pytest.fixture(scope="module")
def default_pool(stack: Stack) -> None:
    stack.start_worker("default")


async def own_org(stack: Stack, pg_urls: DbUrls) -> Stack:
    """The stack as a fresh organization: another test's sessions never reach this one's sinks."""
    stack = dataclasses.replace(stack, org_id=uuid.uuid4(), user_id=uuid.uuid4())
    await seed_async(pg_urls.owner, stack.org_id, stack.user_id, f"Sinks {stack.org_id.hex[:6]}")
    return stack


async def create_sink(client: httpx.AsyncClient, stack: Stack, url: str, exchange: str) -> dict[str, Any]:
    answer = await client.post(
        "/api/v1/webhooks",
        json={
            "name": f"bus-{uuid.uuid4().hex[:6]}",
            "direction": "sink",
            "broker_url": url,
            "exchange": exchange,
            "routing_key": "{org_id}.{session_id}.{type}",
            "event_types": SUBSCRIBED,
        },
        headers=stack.headers(role="admin"),
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def sink_to_a_queue(
    client: httpx.AsyncClient,
    stack: Stack,
    pg_urls: DbUrls,
    rabbitmq: RabbitNode,
    password: str = "guest",
    binding: str = "#",
) -> tuple[Stack, str, dict[str, Any]]:
    """A fresh organization (the stack as it), its sink to an exchange of its own on ``rabbitmq``
    that logs in with ``password``, and a queue bound to that exchange by ``binding`` (in which
    ``{org_id}`` stands for the organization's id): the stack, the queue's name and the sink."""
    stack = await own_org(stack, pg_urls)
    exchange = f"agentapi-{uuid.uuid4().hex[:6]}"
    queue = rabbitmq.bind_queue(exchange, binding.format(org_id=stack.org_id))
    return stack, queue, await create_sink(client, stack, rabbitmq.url(password), exchange)


async def run_session(client: httpx.AsyncClient, stack: Stack, prompts: list[str]) -> str:
    """A session of the echo agent that answers each prompt in turn, then ends; its id."""
    created = (
        await client.post("/api/v1/sessions", json={**ECHO, "prompt": prompts[0]}, headers=stack.headers())
    ).json()
    await read_events(client, created["events_url"], stack.headers(), until=agent_said(f"echo: {prompts[0]}"))
    for prompt in prompts[1:]:
        sent = await client.post(
            f"/api/v1/sessions/{created['id']}/message",
            json={"content": prompt, "type": "user"},
            headers=stack.headers(),
        )
        assert sent.status_code == 200, sent.text
        await read_events(client, created["events_url"], stack.headers(), until=agent_said(f"echo: {prompt}"))
    await client.delete(f"/api/v1/sessions/{created['id']}", headers=stack.headers())
    # Ended once the end is in its log: the events a sink owes are all known from here.
    deadline = time.monotonic() + 30
    while not logged_ids(stack, created["id"], ["session.ended"]):
        assert time.monotonic() < deadline, "the session did not end"
        await asyncio.sleep(0.1)
    return str(created["id"])


def logged_ids(stack: Stack, session_id: str, types: list[str]) -> list[str]:
    """The ids of the session's events of ``types``, in the order of its event log."""
    client = redis.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"])
    try:
        entries = client.xrange(f"{stack.env['AGENTAPI_REDIS_PREFIX']}session:{session_id}:log")
    finally:
        client.close()
    events = [json.loads(fields[b"e"]) for _, fields in entries]
    return [e["id"] for e in events if e["type"] in types]


async def collect(node: RabbitNode, queue: str, until: Any, seconds: float = 90) -> list[dict[str, Any]]:
    """CloudEvents taken off ``queue`` until ``until(documents)`` holds; each parsed by the package."""
    documents: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while not until(documents):
        assert time.monotonic() < deadline, f"timed out with {len(documents)} events"
        documents += await take(node, queue)
        await asyncio.sleep(0.2)
    return documents


async def take(node: RabbitNode, queue: str) -> list[dict[str, Any]]:
    """The CloudEvents waiting in ``queue`` now, each parsed by the package."""
    documents = []
    for properties, body in await asyncio.to_thread(node.drain, queue):
        assert properties["content_type"] == CONTENT_TYPE
        event = JSONFormat().read(None, body)  # raises unless it is a valid CloudEvent
        assert event.get_specversion() == "1.0"
        document = json.loads(body)
        assert properties["message_id"] == document["id"]
        documents.append(document)
    return documents


async def published_all(client: httpx.AsyncClient, stack: Stack, sink_id: str, count: int) -> bool:
    """Whether the sink has ``count`` deliveries, every one published: nothing more will come."""
    answer = await client.get(
        "/api/v1/webhooks/deliveries", params={"limit": 200}, headers=stack.headers(role="admin")
    )
    mine = [d for d in answer.json() if d["webhook_id"] == sink_id]
    return len(mine) == count and all(d["status"] == "succeeded" for d in mine)


def ended(documents: list[dict[str, Any]]) -> bool:
    return any(d["type"] == "dev.agentapi.session.ended" for d in documents)


def settings_in(environment: str) -> Settings:
    """Settings as that environment reads them for egress (production's start-up checks aside)."""
    return Settings(environment="test", jwt_secret="x").model_copy(update={"environment": environment})  # type: ignore[call-arg]


def test_events_are_cloudevents_the_package_accepts() -> None:
    event = Event(
        type=EventType.MESSAGE_COMPLETED,
        org_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        payload={"content": "hi", "role": "agent"},
    )
    document = to_cloudevent(event, "https://agents.example.com/")
    parsed = JSONFormat().read(None, encode(document))
    assert parsed.get_id() == event.id and parsed.get_type() == "dev.agentapi.message.completed"
    assert parsed.get_source() == f"https://agents.example.com/api/v1/orgs/{event.org_id}"
    assert parsed.get_subject() == str(event.session_id) and parsed.get_data() == event.payload
    assert parsed.get_time() == event.ts
    assert routing_key("{org_id}.{type}", document) == f"{event.org_id}.message.completed"


@pytest.mark.parametrize(
    "template", ["{org_id}.{kind}", "{org_id!r}", "{type:>10}", "{org_id.hex}", "{", "{0}"]
)
def test_routing_key_templates_use_only_known_placeholders(template: str) -> None:
    with pytest.raises(ValueError, match="routing_key"):
        check_routing_key(template)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("amqp://u:p@10.1.2.3//", "private"),
        ("amqp://u:p@169.254.169.254//", "metadata"),
        ("amqps://u:p@[fd00::1]:5671//", "private"),
        ("redis://metadata.google.internal:6379/0", "metadata"),
        ("http://broker.example.com", "must be one of"),
        ("sqs://key:secret@evil.example.com", "credentials only"),
        ("amqp://u:p@broker.example.com//?heartbeat=0", "query"),
        ("amqp://127.0.0.1:5672//", "loopback"),
    ],
)
async def test_broker_urls_follow_the_egress_rules(url: str, reason: str) -> None:
    production = settings_in("production")
    with pytest.raises(EgressRefused, match=reason) as refused:
        await check_broker_url(url, production)
    assert "p@" not in str(refused.value) and refused.value.field == "broker_url"


async def test_loopback_brokers_are_accepted_outside_production_and_passwords_never_shown() -> None:
    await check_broker_url("amqp://guest:guest@127.0.0.1:5672//", settings_in("test"))
    await check_broker_url("amqp://guest:guest@127.0.0.1:5672//", settings_in("development"))
    await check_broker_url("sqs://key:secret@", settings_in("production"))
    assert redacted("amqp://user:s3cret@broker:5672/vh") == "amqp://user:***@broker:5672/vh"


async def test_bad_sinks_are_refused_with_the_field_named(stack: Stack) -> None:
    admin = stack.headers(role="admin")
    base = {"name": "bad", "direction": "sink", "event_types": ["session.ended"]}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        private = await client.post(
            "/api/v1/webhooks", json={**base, "broker_url": "amqp://u:pw@10.0.0.7//"}, headers=admin
        )
        assert private.status_code == 422, private.text
        assert private.json()["errors"][0]["field"] == "broker_url" and "pw" not in private.text
        for body in (
            {**base, "broker_url": "amqp://guest:guest@127.0.0.1//", "routing_key": "{secret}"},
            {**base, "broker_url": "amqp://guest:guest@127.0.0.1//", "target_url": "https://x.example"},
            {**base, "broker_url": "amqp://guest:guest@127.0.0.1//", "exchange": "no spaces"},
            {**base, "event_types": ["session.ended"]},
            {**base, "broker_url": "amqp://guest:guest@127.0.0.1//", "event_types": ["audit.recorded"]},
        ):
            answer = await client.post("/api/v1/webhooks", json=body, headers=admin)
            assert answer.status_code == 422, (body, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
        member = await client.post(
            "/api/v1/webhooks",
            json={**base, "broker_url": "amqp://guest:guest@127.0.0.1//"},
            headers=stack.headers(),
        )
        assert member.status_code == 403


async def test_a_sessions_events_arrive_in_order_once_each_as_cloudevents(
    stack: Stack, default_pool: None, pg_urls: DbUrls, rabbitmq: RabbitNode
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        stack, queue, sink = await sink_to_a_queue(client, stack, pg_urls, rabbitmq, binding="{org_id}.#")
        assert sink["secret"] is None and sink["broker_url"] == rabbitmq.url("***")
        assert sink["health"] == "ok" and sink["format"] == "cloudevents"
        session_id = await run_session(client, stack, ["one", "two", "three"])

        documents = await collect(rabbitmq, queue, ended)
        expected = logged_ids(stack, session_id, SUBSCRIBED)
        await until(lambda: published_all(client, stack, sink["id"], len(expected)), 60, "all published")
        documents += await take(rabbitmq, queue)
    assert [d["id"] for d in documents] == expected, "every event once, in the order of the session's log"
    replies = [d["data"]["content"] for d in documents if d["data"].get("content", "").startswith("echo: ")]
    assert replies == ["echo: one", "echo: two", "echo: three"]
    assert {d["subject"] for d in documents} == {session_id}
    assert all(d["orgid"] == str(stack.org_id) for d in documents)


async def test_a_broker_outage_delays_events_without_loss_or_duplicates(
    stack: Stack, default_pool: None, pg_urls: DbUrls, rabbitmq: RabbitNode
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        stack, queue, sink = await sink_to_a_queue(client, stack, pg_urls, rabbitmq)
        admin = stack.headers(role="admin")
        first = await run_session(client, stack, ["before"])
        before = await collect(rabbitmq, queue, ended)
        await asyncio.to_thread(rabbitmq.stop_app)
        try:
            second = await run_session(client, stack, ["during", "the", "outage"])

            async def failing() -> bool:
                row = (await client.get(f"/api/v1/webhooks/{sink['id']}", headers=admin)).json()
                return bool(row["health"] == "failing" and row["last_error"])

            async def retried() -> bool:
                # A retry failed too: the first failure may be only the pooled connection's reset.
                answer = await client.get("/api/v1/webhooks/deliveries", params={"limit": 200}, headers=admin)
                mine = [d for d in answer.json() if d["webhook_id"] == sink["id"]]
                return any(d["status"] == "pending" and d["attempts"] >= 2 for d in mine)

            await until(failing, 60)
            await until(retried, 60, "a retry failed during the outage")
        finally:
            await asyncio.to_thread(rabbitmq.start_app)
        expected = logged_ids(stack, second, SUBSCRIBED)
        after = await collect(rabbitmq, queue, lambda d: len(d) >= len(expected))
        total = len(before) + len(expected)
        await until(lambda: published_all(client, stack, sink["id"], total), 60, "all published")
        after += await take(rabbitmq, queue)
        assert [d["id"] for d in before] == logged_ids(stack, first, SUBSCRIBED)
        assert [d["id"] for d in after] == expected, "all events after the outage, in order, none twice"

        async def recovered() -> bool:
            return bool(
                (await client.get(f"/api/v1/webhooks/{sink['id']}", headers=admin)).json()["health"] == "ok"
            )

        await until(recovered, 60)


async def test_refused_credentials_fail_the_sink_into_the_dead_letter_view(
    stack: Stack, default_pool: None, pg_urls: DbUrls, rabbitmq: RabbitNode
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        stack, queue, sink = await sink_to_a_queue(
            client, stack, pg_urls, rabbitmq, password="wrong-password"
        )
        admin = stack.headers(role="admin")
        tested = (await client.post(f"/api/v1/webhooks/{sink['id']}/test", headers=admin)).json()
        assert not tested["ok"] and "ACCESS_REFUSED" in tested["error"]
        assert "wrong-password" not in json.dumps(tested)
        session_id = await run_session(client, stack, ["refused"])
        expected = logged_ids(stack, session_id, SUBSCRIBED)

        async def dead_letters() -> list[dict[str, Any]]:
            answer = await client.get(
                "/api/v1/webhooks/deliveries", params={"status": "failed"}, headers=admin
            )
            return [d for d in answer.json() if d["webhook_id"] == sink["id"]]

        async def all_dead() -> bool:
            return len(await dead_letters()) == len(expected)

        await until(all_dead, 90)
        row = (await client.get(f"/api/v1/webhooks/{sink['id']}", headers=admin)).json()
        assert row["health"] == "failing" and "ACCESS_REFUSED" in row["last_error"]
        assert "wrong-password" not in json.dumps(row)
        assert rabbitmq.drain(queue) == []

        fixed = await client.patch(
            f"/api/v1/webhooks/{sink['id']}", json={"broker_url": rabbitmq.url()}, headers=admin
        )
        assert fixed.status_code == 200 and fixed.json()["health"] == "ok"
        for delivery in sorted(await dead_letters(), key=lambda d: d["created_at"]):
            again = await client.post(
                f"/api/v1/webhooks/deliveries/{delivery['id']}/redeliver", headers=admin
            )
            assert again.status_code == 202
        documents = await collect(rabbitmq, queue, lambda d: len(d) >= len(expected))
        assert sorted(d["id"] for d in documents) == sorted(expected)
        tested = (await client.post(f"/api/v1/webhooks/{sink['id']}/test", headers=admin)).json()
        assert tested["ok"] and tested["error"] is None
        (test_event,) = await collect(rabbitmq, queue, lambda d: len(d) == 1)
        assert test_event["id"] == tested["event_id"] and test_event["type"] == "dev.agentapi.webhook.test"


async def test_outbound_webhooks_opt_into_cloudevents(
    stack: Stack, default_pool: None, pg_urls: DbUrls
) -> None:
    stack = await own_org(stack, pg_urls)
    receiver = Receiver([200])
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/webhooks",
            json={
                "name": "ce",
                "direction": "outbound",
                "target_url": receiver.url,
                "event_types": ["session.ended"],
                "format": "cloudevents",
            },
            headers=stack.headers(role="admin"),
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        session_id = await run_session(client, stack, ["hello"])
        deadline = time.monotonic() + 60
        while not receiver.succeeded():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    (hit,) = receiver.succeeded()
    assert hit.headers["content-type"] == CONTENT_TYPE
    assert verify(hook["secret"], hit.headers, hit.body) is None
    event = JSONFormat().read(None, hit.body)
    assert event.get_type() == "dev.agentapi.session.ended" and event.get_subject() == session_id
