"""One audit event the database refuses (its organization does not exist) no longer stops the audit
trail: the events behind it are written within seconds, and it waits in the dead-letter stream with
its error. Real processes: `agentapi serve` and `agentapi worker --queues audit`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
import redis.asyncio

from events.streams import FIELD, Names, WorkKind
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack
from tests.test_audit import audit_count, bad_creates, verify

pytestmark = pytest.mark.timeout(240)


async def test_a_poison_audit_event_is_dead_lettered_and_the_rest_are_written(
    stack: Stack, pg_urls: DbUrls
) -> None:
    stack.start_worker("audit")
    # The writer must be running: the test times how soon the events behind the poison one are written.
    for _ in range(480):
        if "serving audit" in stack.logs():
            break
        await asyncio.sleep(0.25)
    names = Names(stack.env["AGENTAPI_REDIS_PREFIX"])
    store = redis.asyncio.Redis.from_url(stack.env["AGENTAPI_REDIS_URL"], decode_responses=True)
    ghost_org = uuid.uuid4()
    try:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
            # A validly signed token naming an organization that does not exist: refused, and audited
            # under that organization, which the audit table's foreign key refuses.
            refused = await client.post(
                "/api/v1/mcp/configurations",
                json={"name": "x", "transport": "http", "endpoint_url": "https://example.com/mcp"},
                headers=stack.headers(org_id=ghost_org),
            )
            assert refused.status_code in (401, 403), refused.text
            sent_at = time.monotonic()
            await bad_creates(client, stack, 10)

        for _ in range(240):
            if await asyncio.to_thread(audit_count, pg_urls, stack.org_id) >= 10:
                break
            await asyncio.sleep(0.25)
        assert await asyncio.to_thread(audit_count, pg_urls, stack.org_id) == 10
        print(
            f"\nthe 10 audit events behind the poison one were written {time.monotonic() - sent_at:.1f} s after"
        )

        dead = [json.loads(fields[FIELD]) for _, fields in await store.xrange(names.dead_letter())]
        poisoned = [d for d in dead if str(ghost_org) in d["data"]]
        assert len(poisoned) == 1, dead
        assert poisoned[0]["stream"] == names.work(WorkKind.AUDIT)
        assert "ForeignKeyViolation" in poisoned[0]["error"], poisoned[0]["error"]
        result = verify(stack, stack.org_id)
        assert result.returncode == 0, result.stdout
    finally:
        await store.aclose()
