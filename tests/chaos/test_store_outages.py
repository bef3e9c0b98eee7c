"""Redis is down for 10 s (once with an append-only file, once without persistence: the restarted
server is empty), or PostgreSQL for 15 s, under live sessions with open event streams: every
session answers afterwards without a restart, the streams resume from their Last-Event-ID with no
event the log holds missing (after a Redis outage each first ends with a reconnect hint), every
mutating request answered 2xx has its audit record and the chain verifies.

Real processes on a redis-server or PostgreSQL server of the test's own (free port; the shared
ones are never touched): `agentapi serve`, `agentapi worker --queues sessions` and `agentapi worker
--queues audit`, echo agents in PTYs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis.asyncio

from api.correlation import HEADER
from events.streams import FIELD, Names, WorkKind
from tests.chaos.test_kill_sessions_worker import Watched, followed_sessions, wait_stable
from tests.fixtures.postgres import DbUrls, PostgresServer
from tests.fixtures.stack import Stack, free_port, running_stack
from tests.test_audit import owner_dsn, verify
from tests.test_outages import RedisServer
from tests.waiting import until

pytestmark = pytest.mark.timeout(240)

SESSIONS = 3
REDIS_OUTAGE_SECONDS = 10
POSTGRES_OUTAGE_SECONDS = 15
# The audit writer's backlog after an outage, on a loaded machine (it writes what it holds in batches;
# a database outage backs it off up to 10 s between tries).
AUDIT_WAIT_SECONDS = 90


@pytest.fixture(params=[True, False], ids=["aof", "no-persistence"])
def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(free_port(), directory, appendonly=request.param)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_stack(own_redis: RedisServer, pg_urls: DbUrls, jwt_secret: str, tmp_path: Path) -> Iterator[Stack]:
    overrides = {"AGENTAPI_REDIS_URL": own_redis.url, "AGENTAPI_MAX_SESSIONS_PER_USER": str(SESSIONS)}
    with running_stack(pg_urls, jwt_secret, tmp_path, overrides, more_workers=("audit",)) as stack:
        yield stack


def prompt_audits(urls: DbUrls, stack: Stack) -> dict[str, int]:
    """The stack org's successful prompt creations on record: correlation id → rows."""
    with psycopg.connect(owner_dsn(urls)) as conn:
        rows = conn.execute(
            "SELECT correlation_id, count(*) FROM audit_logs WHERE org_id = %s"
            " AND action LIKE 'POST /api/v1/prompts%%' AND outcome = 'success' GROUP BY correlation_id",
            (stack.org_id,),
        ).fetchall()
    return {str(correlation_id): int(count) for correlation_id, count in rows}


async def where_audits_are(stack: Stack, correlation_ids: set[str]) -> str:
    """For a failure: which of these requests' audit events the audit work stream still holds
    (pending or not yet read), and what its dead-letter stream and the audit writer said."""
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    store = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    try:
        stream = names.work(WorkKind.AUDIT)
        queued = [
            entry_id
            for entry_id, fields in await store.xrange(stream)
            if json.loads(fields[FIELD]).get("correlation_id") in correlation_ids
        ]
        groups = await store.xinfo_groups(stream)
        dead = [fields[FIELD][:300] for _, fields in await store.xrange(names.dead_letter())]
    finally:
        await store.aclose()
    said = [line for line in stack.logs().splitlines() if "audit" in line.lower()][-20:]
    return f"in the audit stream: {queued}; its groups: {groups}; dead letters: {dead}; logs: {said}"


async def create_prompt(client: httpx.AsyncClient, stack: Stack, name: str, created: list[str]) -> int:
    """Its status; a created prompt's correlation id (what its audit row carries) goes on ``created``."""
    response = await client.post(
        "/api/v1/prompts", json={"name": name, "content": f"say {name}"}, headers=stack.headers()
    )
    assert response.status_code in (201, 503), response.text
    if response.status_code == 201:
        created.append(response.headers[HEADER])
    return response.status_code


async def answered(client: httpx.AsyncClient, stack: Stack, watched: Watched, content: str) -> None:
    """Send ``content`` (retrying while the session is not ready for it) and wait for its reply."""
    headers = stack.headers()
    deadline = time.monotonic() + 60
    while True:
        sent = await client.post(
            f"/api/v1/sessions/{watched.session_id}/message", json={"content": content}, headers=headers
        )
        if sent.status_code == 200:
            break
        assert sent.status_code in (409, 503), sent.text
        assert time.monotonic() < deadline, f"session {watched.session_id} never took a message: {sent.text}"
        await asyncio.sleep(0.5)
    await until(
        lambda: watched.replies("message.completed", f"echo: {content}"), 60, f"{content!r} is answered"
    )


@dataclass
class Outage:
    """What a fault did, as the clients saw it."""

    statuses: list[int]  # of the prompt creations before, during and after
    back: list[float]  # per session: its answer after the store came back, seconds


async def live_through(
    stack: Stack,
    db: DbUrls,
    down: Callable[[], None],
    up: Callable[[], None],
    seconds: float,
    ends_streams: bool,
) -> Outage:
    """Live sessions with open streams through ``down``, ``seconds`` and ``up``; prompts are created
    all along. Checks what holds for any store outage and returns what it measured."""
    headers = stack.headers()
    statuses: list[int] = []
    created: list[str] = []
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=httpx.Timeout(30, read=None)) as client:
        async with followed_sessions(client, headers, SESSIONS) as watched:
            await asyncio.gather(*(wait_stable(client, w.session_id, headers) for w in watched))
            await asyncio.gather(*(answered(client, stack, w, "before the outage") for w in watched))
            # The audit worker boots beside the server; it must be reading before the fault: the
            # "before" prompt's event, published while it was still starting, was lost with the
            # rest of a Redis without persistence, never read.
            await until(lambda: "serving audit" in stack.logs(), 60, "the audit worker serves")
            statuses.append(await create_prompt(client, stack, "before", created))

            down()
            down_at = time.monotonic()
            n = 0
            while time.monotonic() - down_at < seconds:
                statuses.append(await create_prompt(client, stack, f"during-{n}", created))
                n += 1
                await asyncio.sleep(0.5)
            up()
            up_at = time.monotonic()

            if ends_streams:
                await until(
                    lambda: all(w.retries for w in watched), 30, "every stream ends with a retry hint"
                )
            await asyncio.gather(*(answered(client, stack, w, "after the outage") for w in watched))
            back = [w.replies("message.completed", "echo: after the outage")[0][0] - up_at for w in watched]
            statuses.append(await create_prompt(client, stack, "after", created))

            # No gap: every event the session log holds (all of it, or what was written since an
            # empty restart) reached the stream.
            store = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
            try:
                names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
                for w in watched:
                    logged = [
                        json.loads(fields[FIELD])["id"]
                        for _, fields in await store.xrange(names.session_log(w.session_id))
                    ]
                    seen = {json.loads(sse.data).get("event_id") for _, sse in w.events}
                    assert logged and not [event_id for event_id in logged if event_id not in seen]
            finally:
                await store.aclose()

    # Every prompt created (201) has its audit record: nothing acknowledged was lost. Looked for by
    # the requests' correlation ids: a count can be made up by a request answered 503 whose record
    # was kept after all, while a created one is missing.
    def missing() -> set[str]:
        return set(created) - set(prompt_audits(db, stack))

    async def all_audited() -> bool:
        return not await asyncio.to_thread(missing)

    try:
        await until(all_audited, AUDIT_WAIT_SECONDS, f"the {len(created)} prompts created are audited")
    except AssertionError as exc:
        lost = await asyncio.to_thread(missing)
        raise AssertionError(f"{exc}: {len(lost)} missing, {await where_audits_are(stack, lost)}") from None
    audited = await asyncio.to_thread(prompt_audits, db, stack)
    assert sorted(audited) == sorted(created) and set(audited.values()) == {1}, audited
    result = verify(stack, stack.org_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [s for s in stack.access_statuses() if s >= 500 and s != 503]
    return Outage(statuses, back)


def report(what: str, outage: Outage) -> None:
    print(
        f"\n{what}: {SESSIONS} sessions answered {min(outage.back):.1f}-{max(outage.back):.1f} s after it"
        f" came back; {outage.statuses.count(503)} of {len(outage.statuses)} prompt creations refused"
        f" with 503, {outage.statuses.count(201)} created and audited"
    )


async def test_sessions_streams_and_audit_survive_a_redis_outage(
    redis_stack: Stack, own_redis: RedisServer, pg_urls: DbUrls
) -> None:
    outage = await live_through(
        redis_stack, pg_urls, own_redis.stop, own_redis.start, REDIS_OUTAGE_SECONDS, ends_streams=True
    )
    report(
        f"Redis down {REDIS_OUTAGE_SECONDS} s (appendonly {'yes' if own_redis.appendonly else 'no'})", outage
    )


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(free_port())
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_stack(
    own_postgres: PostgresServer, jwt_secret: str, tmp_path: Path
) -> Iterator[tuple[Stack, DbUrls]]:
    db = own_postgres.database()
    overrides = {"AGENTAPI_MAX_SESSIONS_PER_USER": str(SESSIONS)}
    with running_stack(db, jwt_secret, tmp_path, overrides, more_workers=("audit",)) as stack:
        yield stack, db


async def test_sessions_streams_and_audit_survive_a_postgres_outage(
    postgres_stack: tuple[Stack, DbUrls], own_postgres: PostgresServer
) -> None:
    stack, db = postgres_stack
    outage = await live_through(
        stack, db, own_postgres.stop, own_postgres.start, POSTGRES_OUTAGE_SECONDS, ends_streams=False
    )
    report(f"PostgreSQL down {POSTGRES_OUTAGE_SECONDS} s", outage)
