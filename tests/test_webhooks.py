"""Webhooks on the running system: signed inbound deliveries drive sessions, outbound subscribers get
signed notifications with retries and a dead-letter view. Receivers are real HTTP servers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis

from schemas.webhook_signing import signed_headers, verify
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, seed_async
from tests.test_skeleton_e2e import ECHO, agent_said, read_events
from tests.waiting import until

pytestmark = pytest.mark.timeout(180)
STACK_ENV = {
    "AGENTAPI_MCP_ALLOW_INSECURE_HTTP": "true",
    "AGENTAPI_WEBHOOK_MAX_ATTEMPTS": "4",
    "AGENTAPI_WEBHOOK_BACKOFF_SECONDS": "0.2",
}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """Answers each POST with the next planned status (the last one repeats)."""

    plan: list[int]
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = receiver.plan[min(len(receiver.received), len(receiver.plan) - 1)]
                receiver.received.append(
                    Received({k.lower(): v for k, v in self.headers.items()}, body, status)
                )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def succeeded(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.answered < 300]


@pytest.fixture(scope="module")
def default_pool(stack: Stack) -> Iterator[None]:
    stack.start_worker("default")
    yield


async def create(client: httpx.AsyncClient, stack: Stack, **body: Any) -> dict[str, Any]:
    answer = await client.post("/api/v1/webhooks", json=body, headers=stack.headers(role="admin"))
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def deliveries_published(stack: Stack, webhook_id: str) -> int:
    """webhook.received events for one webhook on the default work stream (other tests' sessions
    publish notices there too, so the stream's length says nothing)."""
    client = redis.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"])
    try:
        entries = client.xrange(f"{stack.env['AGENTAPI_REDIS_PREFIX']}work:default")
    finally:
        client.close()
    events = [json.loads(fields[b"e"]) for _, fields in entries]
    return sum(e["type"] == "webhook.received" and e["payload"]["webhook_id"] == webhook_id for e in events)


async def test_a_signed_delivery_starts_a_session_whose_reply_is_notified(
    stack: Stack, default_pool: None
) -> None:
    subscriber = Receiver([200])
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        inbound = await create(
            client,
            stack,
            name=f"ci-{uuid.uuid4().hex[:6]}",
            direction="inbound",
            action={"type": "start_session", **ECHO, "template": "build says {body}"},
        )
        outbound = await create(
            client,
            stack,
            name=f"notify-{uuid.uuid4().hex[:6]}",
            direction="outbound",
            target_url=subscriber.url,
            event_types=["message.completed"],
        )
        assert (
            inbound["secret"]
            and "secret"
            not in (
                await client.get(f"/api/v1/webhooks/{inbound['id']}", headers=stack.headers(role="admin"))
            ).json()
        )
        body = json.dumps({"status": "green"}).encode()
        delivery = await client.post(
            inbound["deliveries_url"], content=body, headers=signed_headers(inbound["secret"], "d-1", body)
        )
        assert delivery.status_code == 202, delivery.text

        expected = 'echo: build says {"status": "green"}'

        def notified() -> bool:
            return any(
                json.loads(r.body)["payload"].get("content") == expected for r in subscriber.succeeded()
            )

        await until(notified, 60)
        hit = next(
            r for r in subscriber.succeeded() if json.loads(r.body)["payload"].get("content") == expected
        )
        assert verify(outbound["secret"], hit.headers, hit.body) is None
        session_id = json.loads(hit.body)["session_id"]
        await client.delete(f"/api/v1/sessions/{session_id}", headers=stack.headers())
        await client.delete(f"/api/v1/webhooks/{outbound['id']}", headers=stack.headers(role="admin"))


async def test_bad_deliveries_are_refused_and_publish_nothing(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        hook = await create(
            client,
            stack,
            name=f"strict-{uuid.uuid4().hex[:6]}",
            direction="inbound",
            action={"type": "start_session", **ECHO, "template": "{body}"},
        )
        url, secret, body = hook["deliveries_url"], hook["secret"], b'{"ok": true}'
        accepted = await client.post(url, content=body, headers=signed_headers(secret, "once", body))
        assert accepted.status_code == 202
        assert deliveries_published(stack, hook["id"]) == 1
        cases = [
            (signed_headers("not-the-secret", "a", body), body, url, 401),
            (signed_headers(secret, "b", body, now=time.time() - 600), body, url, 401),
            (signed_headers(secret, "once", body), body, url, 409),
            (signed_headers(secret, "c", b"x" * 300_000), b"x" * 300_000, url, 413),
            (signed_headers(secret, "d", body), body, f"/api/v1/webhooks/{uuid.uuid4()}/deliveries", 404),
            ({}, body, url, 401),
        ]
        for headers, content, target, status in cases:
            answer = await client.post(target, content=content, headers=headers)
            assert answer.status_code == status, (status, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
        assert deliveries_published(stack, hook["id"]) == 1, "a refused delivery was published"

        # Deliveries carry no JWT, but each one to a known webhook is in its organization's trail;
        # refused ones (401) once a minute, the rest only counted, so they cannot flood it.
        stack.start_worker("audit")
        admin = stack.headers(role="admin")
        query = {"resource_type": "webhooks", "resource_id": hook["id"], "action": "POST"}
        recorded: list[tuple[str, int]] = []
        for _ in range(150):
            page = (await client.get("/api/v1/audit", params=query, headers=admin)).json()
            recorded = sorted((e["outcome"], e["details"]["status"]) for e in page["entries"])
            if len(recorded) >= 4:
                break
            await asyncio.sleep(0.2)
        expected = [("denied", 401), ("failure", 409), ("failure", 413), ("success", 202)]
        assert recorded == sorted(expected), recorded
        assert all(e["actor_user_id"] is None and e["details"]["role"] == "public" for e in page["entries"])

        member = await client.post(
            "/api/v1/webhooks",
            json={
                "name": "x",
                "direction": "inbound",
                "action": {"type": "start_session", **ECHO, "template": "t"},
            },
            headers=stack.headers(),
        )
        assert member.status_code == 403
        neighbour = stack.headers(role="admin", org_id=uuid.uuid4(), user_id=uuid.uuid4())
        assert (await client.get(f"/api/v1/webhooks/{hook['id']}", headers=neighbour)).status_code in (
            403,
            404,
        )
        bad_target = await client.post(
            "/api/v1/webhooks",
            json={
                "name": "y",
                "direction": "outbound",
                "target_url": "http://example.com/x",
                "event_types": ["session.ended"],
            },
            headers=stack.headers(role="admin"),
        )
        assert bad_target.status_code == 422 and bad_target.json()["errors"][0]["field"] == "target_url"


async def test_retries_until_success_and_dead_letters_what_never_succeeds(
    stack: Stack, default_pool: None, pg_urls: DbUrls
) -> None:
    # An organization of its own: a session of another test ending in the shared one would be
    # delivered to these hooks too and spend the receivers' plans.
    stack = dataclasses.replace(stack, org_id=uuid.uuid4(), user_id=uuid.uuid4())
    await seed_async(pg_urls.owner, stack.org_id, stack.user_id, "Webhook Retries Org")
    flaky, broken = Receiver([500, 502, 503, 200]), Receiver([500])
    admin = stack.headers(role="admin")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        hooks = [
            await create(
                client,
                stack,
                name=f"{name}-{uuid.uuid4().hex[:6]}",
                direction="outbound",
                target_url=receiver.url,
                event_types=["session.ended"],
            )
            for name, receiver in (("flaky", flaky), ("broken", broken))
        ]
        created = (
            await client.post("/api/v1/sessions", json={**ECHO, "prompt": "hi"}, headers=stack.headers())
        ).json()
        await read_events(client, created["events_url"], stack.headers(), until=agent_said("echo: hi"))
        await client.delete(f"/api/v1/sessions/{created['id']}", headers=stack.headers())

        await until(lambda: len(flaky.succeeded()) == 1 and len(broken.received) >= 4, 60)

        async def dead_letters() -> list[dict[str, Any]]:
            answer = await client.get(
                "/api/v1/webhooks/deliveries", params={"status": "failed"}, headers=admin
            )
            return [d for d in answer.json() if d["webhook_id"] == hooks[1]["id"]]

        async def settled() -> bool:
            """Both deliveries final (succeeded or dead-lettered): no attempt is due any more."""
            answer = await client.get("/api/v1/webhooks/deliveries", headers=admin)
            mine = [d for d in answer.json() if d["webhook_id"] in {hook["id"] for hook in hooks}]
            return len(mine) == 2 and all(d["status"] != "pending" for d in mine)

        await until(settled, 60, "both deliveries are final")
        failed = await dead_letters()
        assert len(failed) == 1 and failed[0]["attempts"] == 4 and failed[0]["last_status_code"] == 500
        assert len(flaky.received) == 4 and len(flaky.succeeded()) == 1, "exactly one successful delivery"
        assert len(broken.received) == 4, "no attempt beyond the budget"

        broken.plan = [200]
        again = await client.post(f"/api/v1/webhooks/deliveries/{failed[0]['id']}/redeliver", headers=admin)
        assert again.status_code == 202
        await until(lambda: len(broken.succeeded()) == 1, 60)
        repeat = await client.post(f"/api/v1/webhooks/deliveries/{failed[0]['id']}/redeliver", headers=admin)
        assert repeat.status_code == 409


async def test_admins_change_disable_and_rotate_webhooks(stack: Stack, pg_urls: DbUrls) -> None:
    admin = stack.headers(role="admin")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        hook = await create(
            client,
            stack,
            name=f"editable-{uuid.uuid4().hex[:6]}",
            direction="inbound",
            action={"type": "start_session", **ECHO, "template": "{body}"},
        )
        path, url, body = f"/api/v1/webhooks/{hook['id']}", hook["deliveries_url"], b'{"n": 1}'

        off = await client.patch(path, json={"enabled": False}, headers=admin)
        assert off.status_code == 200 and off.json()["enabled"] is False, off.text
        while_off = await client.post(url, content=body, headers=signed_headers(hook["secret"], "off", body))
        assert while_off.status_code == 404, "a disabled webhook takes no deliveries"
        renamed = f"renamed-{uuid.uuid4().hex[:6]}"
        on = await client.patch(path, json={"enabled": True, "name": renamed}, headers=admin)
        assert on.status_code == 200 and (on.json()["enabled"], on.json()["name"]) == (True, renamed)
        assert on.json()["action"]["template"] == "{body}", "what was not sent is kept"

        rotated = await client.post(f"{path}/secret", headers=admin)
        assert rotated.status_code == 201 and rotated.json()["secret"] != hook["secret"]
        old = await client.post(url, content=body, headers=signed_headers(hook["secret"], "old", body))
        assert old.status_code == 401, "the old secret stops working at once"
        new_secret = rotated.json()["secret"]
        new = await client.post(url, content=body, headers=signed_headers(new_secret, "new", body))
        assert new.status_code == 202, new.text
        assert deliveries_published(stack, hook["id"]) == 1
        shown = await client.get(path, headers=admin)
        assert new_secret not in shown.text and hook["secret"] not in shown.text

        outbound = await create(
            client,
            stack,
            name=f"notify-{uuid.uuid4().hex[:6]}",
            direction="outbound",
            target_url=Receiver([200]).url,
            event_types=["session.ended"],
        )
        out_path = f"/api/v1/webhooks/{outbound['id']}"
        changed = await client.patch(
            out_path, json={"event_types": ["session.ended", "message.completed"]}, headers=admin
        )
        assert changed.status_code == 200 and changed.json()["event_types"] == [
            "session.ended",
            "message.completed",
        ]

        refused = [
            (path, {"direction": "outbound"}, 422, "direction"),
            (path, {"name": None}, 422, "name"),
            (path, {"target_url": "http://127.0.0.1:9/hook"}, 422, "target_url"),
            (path, {}, 422, None),
            (path, {"action": {"type": "post_message", "template": "t"}}, 422, None),
            (path, {"name": outbound["name"]}, 409, None),
            (out_path, {"action": {"type": "start_session", **ECHO, "template": "t"}}, 422, "action"),
            (out_path, {"event_types": ["no.such.event"]}, 422, None),
            (out_path, {"event_types": []}, 422, "event_types"),
            (out_path, {"target_url": "http://example.com/x"}, 422, "target_url"),
            (f"/api/v1/webhooks/{uuid.uuid4()}", {"enabled": False}, 404, None),
        ]
        for target, patch, status, field_name in refused:
            answer = await client.patch(target, json=patch, headers=admin)
            assert answer.status_code == status, (patch, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            if field_name:
                assert field_name in [e["field"] for e in answer.json()["errors"]], answer.text
        malformed = await client.patch(
            path, content=b'{"enabled": fal', headers={**admin, "content-type": "application/json"}
        )
        assert malformed.status_code == 400, malformed.text

        member = stack.headers()
        assert (await client.patch(path, json={"enabled": False}, headers=member)).status_code == 403
        assert (await client.post(f"{path}/secret", headers=member)).status_code == 403
        neighbour = dataclasses.replace(stack, org_id=uuid.uuid4(), user_id=uuid.uuid4())
        await seed_async(pg_urls.owner, neighbour.org_id, neighbour.user_id, "Webhook Neighbour Org")
        other_admin = neighbour.headers(role="admin")
        assert (await client.patch(path, json={"enabled": False}, headers=other_admin)).status_code == 404
        assert (await client.post(f"{path}/secret", headers=other_admin)).status_code == 404
        after = (await client.get(path, headers=admin)).json()
        assert (after["enabled"], after["name"]) == (True, renamed), "refused changes changed nothing"
        still = await client.post(url, content=body, headers=signed_headers(new_secret, "still", body))
        assert still.status_code == 202, "the refused rotations left the secret alone"
