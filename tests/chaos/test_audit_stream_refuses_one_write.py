"""Redis refuses the audit event a raw message sends along with it (the audit stream's key is not a
stream: WRONGTYPE on that one command) while it queues the message: the client was answered 500
for a message its agent then got. The message is now answered as accepted, and its record is
stored in the chain directly, as for any record the audit stream cannot take. Real processes
(`agentapi serve`), real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest
import redis.asyncio

from events.streams import Names, WorkKind
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack
from tests.test_audit import owner_dsn

pytestmark = pytest.mark.timeout(240)


def records_of(urls: DbUrls, correlation_id: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(owner_dsn(urls)) as conn:
        rows = conn.execute(
            "SELECT action, outcome, details FROM audit_logs WHERE correlation_id = %s", (correlation_id,)
        ).fetchall()
    return [(row[0], row[1], row[2]["status"]) for row in rows]


async def test_a_message_queued_is_accepted_when_only_its_audit_write_is_refused(
    stack: Stack, pg_urls: DbUrls
) -> None:
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    store = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    audit = names.work(WorkKind.AUDIT)
    try:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
            headers = stack.headers()
            created = await client.post(
                "/api/v1/sessions", json={"agent_type": "custom", "custom_agent": "echo"}, headers=headers
            )
            assert created.status_code == 202, created.text
            session_id = created.json()["id"]
            await store.delete(audit)
            await store.set(audit, "not a stream")
            sent = await client.post(
                f"/api/v1/sessions/{session_id}/message",
                json={"content": "\x1b", "type": "raw"},
                headers={**headers, "X-Correlation-ID": "raw-wrongtype"},
            )
        assert sent.status_code == 200, sent.text
        entries = await store.xrange(names.session_input(session_id))
        assert len(entries) == 1
        records = await asyncio.to_thread(records_of, pg_urls, "raw-wrongtype")
        assert records == [("POST /api/v1/sessions/{session_id}/message", "success", 200)]
    finally:
        await store.delete(audit)
        await store.aclose()
