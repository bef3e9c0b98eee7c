"""The lean message path (api/lean_message.py) against the route's: the same requests, accepted and
refused, sent to an ingress with the path and to one with ``AGENTAPI_LEAN_MESSAGE_PATH=false``, get
the same status, headers and body, leave the same audit records and the same input-stream entries;
only the requests the path takes are counted by ``agentapi_lean_messages_total``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from events.streams import FIELD, Names, WorkKind
from tests.fixtures.metrics import scraped_total
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, second_ingress, seed
from tests.waiting import until

pytestmark = pytest.mark.timeout(300)

# A per-user limit a test can exhaust (each request here is charged on both ingresses' shared bucket).
STACK_ENV = {
    "AGENTAPI_METRICS_TOKEN": "scrape-me",
    "AGENTAPI_RATE_LIMIT_PER_USER": "200",
    "AGENTAPI_MAX_REQUEST_BODY_BYTES": "4096",
}
TAKEN = "agentapi_lean_messages_total"
ECHO = {"agent_type": "custom", "custom_agent": "echo"}
# What differs between two answers to the same request by design.
VARYING_HEADERS = {"date"}


@pytest.fixture(scope="module")
def plain_ingress(stack: Stack) -> Iterator[str]:
    """A second ingress of the same stack that sends every message through the route."""
    with second_ingress(stack, {"AGENTAPI_LEAN_MESSAGE_PATH": "false"}) as url:
        yield url


@pytest.fixture
async def clients(
    stack: Stack, plain_ingress: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=stack.base_url, timeout=60) as lean,
        httpx.AsyncClient(base_url=plain_ingress, timeout=60) as plain,
    ):
        yield lean, plain


async def taken(base_url: str) -> float:
    return await scraped_total(base_url, TAKEN)


async def new_session(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    created = await client.post("/api/v1/sessions", json=ECHO, headers=headers)
    assert created.status_code == 202, created.text
    session_id = str(created.json()["id"])
    await until_status(client, session_id, headers, "stable")
    return session_id


async def until_status(
    client: httpx.AsyncClient, session_id: str, headers: dict[str, str], *wanted: str
) -> None:
    async def reached() -> bool:
        await asyncio.sleep(0.3)
        answer = await client.get(f"/api/v1/sessions/{session_id}/status", headers=headers)
        return answer.json().get("session_status") in wanted

    await until(reached, 60, f"session {session_id} is {' or '.join(wanted)}")


def shown(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k, v) for k, v in response.headers.multi_items() if k not in VARYING_HEADERS)
    return response.status_code, headers, response.content


class Pair:
    """Sends each case to both ingresses with the case's own correlation id."""

    def __init__(self, lean: httpx.AsyncClient, plain: httpx.AsyncClient) -> None:
        self.lean, self.plain = lean, plain
        self.cases: dict[str, int] = {}
        # Requests of abandoned attempts that the lean ingress's route took.
        self.abandoned_taken = 0

    async def send(
        self,
        case: str,
        path: str,
        headers: dict[str, str],
        before: Callable[[], Awaitable[None]] | None = None,
        expect: int | None = None,
        **request: Any,
    ) -> int:
        """The case's status; ``before`` runs before each ingress's request. With ``expect``, an
        attempt that either ingress did not answer so is abandoned and the case sent again."""
        for _ in range(5):
            cid = f"lean-{uuid.uuid4().hex[:12]}"
            answers = []
            content = request.get("content")
            for client in (self.lean, self.plain):
                if before is not None:
                    await before()
                if callable(content):  # a generator's: a new one for each ingress
                    request = {**request, "content": content()}
                answers.append(
                    await client.post(path, headers={**headers, "X-Correlation-ID": cid}, **request)
                )
            if expect is None or all(answer.status_code == expect for answer in answers):
                break
            self.abandoned_taken += answers[0].status_code != expect
        lean, plain = answers
        assert shown(lean) == shown(plain), case
        self.cases[cid] = lean.status_code
        return lean.status_code


async def audit_records(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    """The audit stream's records of requests by correlation id, without what differs per event
    (id, time)."""
    client = aioredis.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"])
    try:
        entries = await client.xrange(Names(stack.env["AGENTAPI_REDIS_PREFIX"]).work(WorkKind.AUDIT))
    finally:
        await client.aclose()
    records: dict[str, list[dict[str, Any]]] = {}
    for _, fields in entries:
        event = json.loads(fields[FIELD.encode()])
        event.pop("id"), event.pop("ts")
        if event["payload"]["action"] == "membership.provisioned":  # a new member's first request's
            continue
        records.setdefault(event["correlation_id"], []).append(event)
    return records


async def input_entries(stack: Stack, session_id: str) -> list[dict[bytes, bytes]]:
    client = aioredis.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"])
    try:
        entries = await client.xrange(Names(stack.env["AGENTAPI_REDIS_PREFIX"]).session_input(session_id))
    finally:
        await client.aclose()
    return [fields for _, fields in entries]


async def test_the_lean_path_answers_and_records_as_the_route(
    stack: Stack, plain_ingress: str, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], pg_urls: DbUrls
) -> None:
    lean, plain = clients
    owner = stack.headers()
    session = await new_session(lean, owner)
    path = f"/api/v1/sessions/{session}/message"
    json_type = {**owner, "Content-Type": "application/json"}
    pair = Pair(lean, plain)
    before = await taken(stack.base_url)

    # Taken by the path: accepted, and refused by the route's own calls after the body was valid.
    taken_cases = [
        ("a raw message", {"json": {"content": "x", "type": "raw"}}, 200),
        ("raw keys with non-ASCII text", {"json": {"content": "é ✓ \t", "type": "raw"}}, 200),
        ("an empty raw message", {"json": {"content": "", "type": "raw"}}, 422),
        ("a blank user message", {"json": {"content": "  "}}, 422),
    ]
    for case, request, status in taken_cases:
        entries = len(await input_entries(stack, session))
        assert await pair.send(case, path, owner, **request) == status, case
        added = (await input_entries(stack, session))[entries:]
        assert len(added) == (2 if status == 200 else 0), case
        assert status != 200 or added[0] == added[1], case

    # Left to the route: bodies the model refuses, or that the path does not read itself.
    def chunks() -> AsyncIterator[bytes]:
        async def body() -> AsyncIterator[bytes]:
            yield b'{"content": "chunked",'
            yield b' "type": "raw"}'

        return body()

    route_cases = [
        ("malformed JSON", {"content": b'{"content": "x", ', "headers": json_type}, 400),
        ("not an object", {"json": ["x"]}, 400),
        ("an unknown field", {"json": {"content": "x", "type": "raw", "extra": 1}}, 422),
        ("content not a string", {"json": {"content": 5, "type": "raw"}}, 422),
        ("an unknown type", {"json": {"content": "x", "type": "other"}}, 422),
        ("no content", {"json": {"type": "raw"}}, 422),
        ("no body", {"content": b"", "headers": json_type}, 400),
        (
            "a body over the limit",
            {"content": b'{"content": "' + b"x" * 5000 + b'"}', "headers": json_type},
            413,
        ),
        ("a chunked body", {"content": chunks, "headers": json_type}, 200),
    ]
    for case, request, status in route_cases:
        headers = {**owner, **request.pop("headers", {})}
        got = await pair.send(case, path, headers, **request)
        assert got in ((400, 422) if status == 400 else (status,)), case

    # Refused before the path by the middlewares, or (404) by the session lookup the path calls.
    other_org, other_user = uuid.uuid4(), uuid.uuid4()
    await asyncio.to_thread(seed, pg_urls.owner, other_org, other_user, "Other Org")
    refused = [
        ("no token", {}, 401),
        ("a bad token", {"Authorization": "Bearer not-a-token"}, 401),
        ("an organization that does not exist", stack.headers(org_id=uuid.uuid4()), 403),
        ("another tenant's token", stack.headers(org_id=other_org, user_id=other_user), 404),
        ("another member's session", stack.headers(user_id=uuid.uuid4()), 404),
        ("a text body", {**owner, "Content-Type": "text/plain"}, 415),
    ]
    for case, headers, status in refused:
        assert await pair.send(case, path, headers, json={"content": "x", "type": "raw"}) == status, case
    assert (
        await pair.send(
            "no such session",
            f"/api/v1/sessions/{uuid.uuid4()}/message",
            owner,
            json={"content": "x", "type": "raw"},
        )
        == 404
    )

    # A user message while the agent is busy with the one before: 409 from both.
    await until_status(lean, session, owner, "stable")
    assert (await lean.post(path, json={"content": "hello"}, headers=owner)).status_code == 200
    assert await pair.send("a user message to a busy agent", path, owner, json={"content": "again"}) == 409

    # A rate-limited user: 429 from both (the limit is checked before the path).
    flooder = stack.headers(user_id=uuid.uuid4())

    async def flood() -> None:
        for _ in range(400):
            if (await lean.get("/api/v1/sessions", headers=flooder)).status_code == 429:
                return

    # GCRA lets one more request through every 0.3 s at 200 a minute: one that came later than
    # that after the flood (a loaded machine) passed, so such an attempt is made again.
    assert (
        await pair.send(
            "over the rate limit",
            path,
            flooder,
            before=flood,
            expect=429,
            json={"content": "x", "type": "raw"},
        )
        == 429
    )

    # The client key's alias, and an ended session's 410.
    minted = await lean.post(f"/api/v1/sessions/{session}/client-keys", json={}, headers=owner)
    assert minted.status_code == 201, minted.text
    key = {"Authorization": f"Bearer {minted.json()['key']}"}
    assert (
        await pair.send("a raw message by the alias", "/message", key, json={"content": "k", "type": "raw"})
        == 200
    )
    assert await pair.send("bad JSON by the alias", "/message", {**json_type, **key}, content=b"{") in (
        400,
        422,
    )
    ended = await new_session(lean, owner)
    assert (await lean.delete(f"/api/v1/sessions/{ended}", headers=owner)).status_code in (200, 202, 204)
    await until_status(lean, ended, owner, "ended", "failed")
    assert (
        await pair.send(
            "an ended session",
            f"/api/v1/sessions/{ended}/message",
            owner,
            json={"content": "x", "type": "raw"},
        )
        == 410
    )

    # Each request left one record (or, without a tenant, none), the same from both ingresses.
    records = await audit_records(stack)
    for cid, status in pair.cases.items():
        kept = records.get(cid, [])
        assert len(kept) == (0 if status == 401 else 2), (cid, status, kept)
        assert not kept or kept[0] == kept[1], kept

    # Taken: every request with a valid body that reached the route (the three 404s, the user
    # message sent alone, the busy 409, the alias's message, the ended 410 besides the first cases),
    # and only by the lean ingress.
    assert await taken(stack.base_url) - before == len(taken_cases) + 7 + pair.abandoned_taken
    assert await taken(plain_ingress) == 0
