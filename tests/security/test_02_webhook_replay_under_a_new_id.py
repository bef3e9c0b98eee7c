"""Finding 2: the delivery id was not signed, so a captured delivery re-sent with a new id was
accepted (202) for the whole 300 s window. Deliveries are now Standard Webhooks: the signature
covers ``webhook-id.webhook-timestamp.body`` and deduplication is on the signed id."""

from __future__ import annotations

import uuid

import httpx

from schemas.webhook_signing import ID_HEADER, signed_headers
from tests.fixtures.stack import Stack
from tests.security.helpers import assert_problem
from tests.test_skeleton_e2e import ECHO
from tests.test_webhooks import deliveries_published


async def test_a_captured_delivery_cannot_be_replayed_under_another_id(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/webhooks",
            json={
                "name": f"replay-{uuid.uuid4().hex[:6]}",
                "direction": "inbound",
                "action": {"type": "start_session", **ECHO, "template": "{body}"},
            },
            headers=stack.headers(role="admin"),
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["secret"].startswith("whsec_")
        body = b'{"deploy": "prod"}'
        captured = signed_headers(hook["secret"], "msg_original", body)
        assert (await client.post(hook["deliveries_url"], content=body, headers=captured)).status_code == 202

        renamed = await client.post(
            hook["deliveries_url"], content=body, headers={**captured, ID_HEADER: "msg_replayed"}
        )
        assert "signature" in str(assert_problem(renamed, 401)["detail"])
        assert_problem(await client.post(hook["deliveries_url"], content=body, headers=captured), 409)
        # The old scheme's headers alone are refused too.
        legacy = {"X-Agentapi-Delivery": "x", "X-Agentapi-Timestamp": captured["webhook-timestamp"]}
        assert_problem(await client.post(hook["deliveries_url"], content=body, headers=legacy), 401)
        assert deliveries_published(stack, hook["id"]) == 1
        sessions = (await client.get("/api/v1/sessions", headers=stack.headers())).json()["sessions"]
        for session in sessions:
            await client.delete(f"/api/v1/sessions/{session['id']}", headers=stack.headers())
