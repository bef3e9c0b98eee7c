"""Finding 7: 1,300 requests with bad or missing tokens got no 429, and 300 badly signed deliveries
to a known webhook wrote 300 audit rows. Requests without a valid token are now limited per client
address (``X-Forwarded-For`` only from a trusted proxy), and refused deliveries are counted, with
one audit row per webhook and minute."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx

from api.address_limit import client_address
from schemas.settings import Settings
from schemas.webhook_signing import signed_headers
from tests.fixtures.stack import Stack
from tests.security.helpers import assert_problem
from tests.test_audit import audit_writer_done
from tests.test_skeleton_e2e import ECHO
from tests.waiting import until

LIMIT = 20
STACK_ENV = {"AGENTAPI_RATE_LIMIT_PER_ADDRESS": str(LIMIT), "AGENTAPI_TRUSTED_PROXIES": '["127.0.0.1"]'}


def _from(address: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": f"198.51.100.99, {address}", **headers}


async def test_bad_and_missing_tokens_get_429_per_address(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        statuses = []
        for index in range(LIMIT + 10):
            headers = (
                _from("203.0.113.7", Authorization="Bearer not.a.token")
                if index % 2
                else _from("203.0.113.7")
            )
            statuses.append((await client.get("/api/v1/sessions", headers=headers)).status_code)
        assert set(statuses[:LIMIT]) == {401}, statuses
        assert statuses[-1] == 429, statuses
        refused = await client.get("/api/v1/sessions", headers=_from("203.0.113.7"))
        assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) >= 1
        # A valid token from the same address is not held back by someone else's bad requests,
        # and another address has its own budget.
        valid = await client.get("/api/v1/sessions", headers=_from("203.0.113.7", **stack.headers()))
        assert valid.status_code == 200
        assert (await client.get("/api/v1/sessions", headers=_from("203.0.113.8"))).status_code == 401


def test_forwarded_for_is_read_only_from_a_trusted_proxy() -> None:
    settings = Settings(jwt_secret="x" * 32, trusted_proxies=["10.0.0.0/8"])  # type: ignore[call-arg]

    def scope(peer: str, forwarded: str) -> dict[str, object]:
        return {"client": (peer, 1234), "headers": [(b"x-forwarded-for", forwarded.encode())]}

    assert client_address(scope("203.0.113.5", "192.0.2.1"), settings) == "203.0.113.5"  # type: ignore[arg-type]
    assert client_address(scope("10.1.1.1", "192.0.2.1, 10.2.2.2"), settings) == "192.0.2.1"  # type: ignore[arg-type]
    # A client's own X-Forwarded-For entries come before the proxy's: the rightmost untrusted wins.
    assert client_address(scope("10.1.1.1", "6.6.6.6, 192.0.2.1"), settings) == "192.0.2.1"  # type: ignore[arg-type]


async def test_badly_signed_deliveries_are_counted_not_stored_one_row_each(stack: Stack) -> None:
    stack.start_worker("audit")
    admin = stack.headers(role="admin")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        created = await client.post(
            "/api/v1/webhooks",
            json={
                "name": f"flood-{uuid.uuid4().hex[:6]}",
                "direction": "inbound",
                "action": {"type": "start_session", **ECHO, "template": "{body}"},
            },
            headers=admin,
        )
        hook = created.json()
        body = json.dumps({"x": 1}).encode()
        for index in range(30):
            forged = signed_headers("whsec_" + "A" * 43, f"forged-{index}", body)
            answer = await client.post(
                hook["deliveries_url"], content=body, headers={**forged, **_from(f"203.0.113.{100 + index}")}
            )
            assert answer.status_code == 401
        query = {"resource_type": "webhooks", "resource_id": hook["id"], "action": "POST"}
        rows: list[dict[str, object]] = []
        for _ in range(300):
            rows = (await client.get("/api/v1/audit", params=query, headers=admin)).json()["entries"]
            if rows:
                break
            await asyncio.sleep(0.2)
        await until(lambda: audit_writer_done(stack), 60, "the audit writer stored every event")
        rows = (await client.get("/api/v1/audit", params=query, headers=admin)).json()["entries"]
        assert [row["outcome"] for row in rows] == ["denied"]
        metrics = (await client.get("/metrics")).text
        counted = [
            line
            for line in metrics.splitlines()
            if line.startswith("agentapi_public_requests_refused_total{")
        ]
        assert len(counted) == 1 and counted[0].endswith(" 29.0"), counted
