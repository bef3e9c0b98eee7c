"""Two writers storing the same audit events at once (the audit writer, and an ingress that stored
them directly after a publish that reached Redis after all): one stores them, the other finds them
stored. Before, both looked for the events before taking the organization's lock, and the second
failed on their event ids: the ingress answered 503 for a request whose record existed."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from events.audit import audit_event
from schemas.db import dispose_engine
from services.audit_log import write_batch
from tests.fixtures.postgres import DbUrls, service_engine
from tests.fixtures.stack import seed_async
from tests.waiting import until

pytestmark = pytest.mark.timeout(120)


def owner_dsn(urls: DbUrls) -> str:
    return urls.owner.replace("postgresql+asyncpg://", "postgresql://")


async def test_the_same_events_written_twice_at_once_are_stored_once(pg_urls: DbUrls) -> None:
    org_id, user_id = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, org_id, user_id, "Two Writers Org")
    events = [
        audit_event(org_id=org_id, actor_user_id=user_id, action=f"POST /things/{n}", outcome="success")
        for n in range(20)
    ]
    engines = [service_engine(pg_urls), service_engine(pg_urls)]
    owner = await psycopg.AsyncConnection.connect(owner_dsn(pg_urls), autocommit=True)
    try:
        # Both writers get as far as the organization's lock while a third party holds it, so
        # whatever each looked up before the lock, it looked up before the other one wrote.
        key = (await (await owner.execute("SELECT hashtextextended(%s, 7)", (str(org_id),))).fetchone())[0]  # type: ignore[index]
        await owner.execute("SELECT pg_advisory_lock(%s)", (key,))
        writers = [asyncio.create_task(write_batch(engine, events)) for engine in engines]

        async def both_waiting() -> bool:
            waiting = await owner.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            return (await waiting.fetchone())[0] == 2  # type: ignore[index]

        await until(both_waiting, timeout=30, what="both writers wait for the organization's lock")
        await owner.execute("SELECT pg_advisory_unlock(%s)", (key,))
        written = sorted(await asyncio.gather(*writers))
        assert written == [0, 20]
        rows = await owner.execute(
            "SELECT count(*), count(DISTINCT event_id), max(seq) FROM audit_logs WHERE org_id = %s", (org_id,)
        )
        assert await rows.fetchone() == (20, 20, 20)
    finally:
        await owner.close()
        for engine in engines:
            await dispose_engine(engine)
