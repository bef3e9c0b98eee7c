"""An audit writer started while Redis is away waits for it, then stores what comes. Before, the
refused creation of its consumer group ended the writer's thread: the worker went on serving and no
audit event was stored again (a store-outage chaos test whose outage began while its audit worker
was starting lost the events of every request after)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from events.audit import audit_event
from events.connection import thread_redis
from events.streams import FIELD, Names, WorkKind
from schemas.settings import Settings
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import free_port, seed_async
from tests.test_audit_log_writers import owner_dsn
from tests.test_outages import RedisServer
from tests.waiting import until
from workers.audit_writer import AuditWriter

pytestmark = pytest.mark.timeout(120)


async def test_a_writer_started_while_redis_is_down_stores_events_once_it_is_back(
    pg_urls: DbUrls, tmp_path: Path
) -> None:
    org_id, user_id = uuid.uuid4(), uuid.uuid4()
    await seed_async(pg_urls.owner, org_id, user_id, "Late Redis Org")
    server = RedisServer(free_port(), tmp_path)
    settings = Settings(
        database_url=pg_urls.service,
        platform_database_url=pg_urls.platform,
        environment="test",
        jwt_secret="audit-writer-start",
        redis_url=server.url,
        redis_prefix=f"audit-writer-start-{uuid.uuid4().hex[:8]}:",
    )
    client = thread_redis(server.url, decode_responses=True)
    writer = AuditWriter(settings, client, "writer")
    tried = threading.Event()
    ensure_group = writer.consumer.ensure_group

    def tried_then_ensure_group() -> None:
        tried.set()
        ensure_group()

    writer.consumer.ensure_group = tried_then_ensure_group  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,), name="audit-writer")
    thread.start()
    try:
        await until(tried.is_set, 30, "the writer tried to reach Redis")
        server.start()
        event = audit_event(org_id=org_id, actor_user_id=user_id, action="POST /late", outcome="success")
        client.xadd(Names(settings.redis_prefix).work(WorkKind.AUDIT), {FIELD: event.to_wire()})

        def stored() -> bool:
            with psycopg.connect(owner_dsn(pg_urls)) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM audit_logs WHERE org_id = %s AND action = 'POST /late'", (org_id,)
                ).fetchone()
            return bool(row and row[0] == 1)

        await until(stored, 30, "the event is stored")
    finally:
        stop.set()
        thread.join(timeout=30)
        client.close()
        server.kill()
