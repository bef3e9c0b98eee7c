"""Delivering a session's events to an event sink, in the order of its event log, exactly once each.

Every notice for a sink-subscribed event asks for a *drain* of (sink, session): under a per-pair Redis
lock, the drain first turns the session's log entries past the last one it sent into delivery
rows (so an event whose own notice is still in flight is not overtaken by a later one), then
publishes the pending rows in log order. A failure stops the drain at the first unconfirmed event
and retries the pair with backoff; once the attempt budget is spent the pair's pending events go to
the dead-letter view (``status=failed``) shared with webhooks, from where an admin redelivers them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import dramatiq
from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from events.cloudevents import encode, to_cloudevent
from events.envelope import Event
from events.results import read_log
from events.sinks import Outgoing, PublishFailed, publish, routing_key
from events.streams import stream_id_key
from schemas.db import TenantContext, dialect_insert, tenant_transaction
from schemas.tables import Webhook, WebhookDelivery
from schemas.webhook_signing import secret_ref
from services.egress import EgressRefused, Resolver, check_broker_url, resolve
from workers.context import WorkerContext

log = logging.getLogger(__name__)

BATCH = 500
LOCK_SECONDS = 120
# How long a queued-drain mark holds without its drain running (a lost message) before notices
# enqueue drains again.
QUEUED_SECONDS = 120
NO_SESSION = "-"


def position(stream_id: str) -> str:
    """A log entry's id as text that sorts like Redis sorts ids."""
    ms, seq = stream_id_key(stream_id)
    return f"{ms:015d}-{seq:010d}"


def stream_id(stored: str) -> str:
    ms, _, seq = stored.partition("-")
    return f"{int(ms)}-{int(seq)}"


def _admin(org_id: UUID) -> TenantContext:
    return TenantContext(org_id=org_id, user_id=None, role="admin")


@dataclass
class Drain:
    context: WorkerContext
    sink_id: UUID
    org_id: UUID
    session: str  # a session id, or NO_SESSION for events outside any session
    # What the broker's name is looked up with for the egress check; the connection goes where it vetted.
    resolver: Resolver = resolve

    async def run(self) -> None:
        """Drain under the pair's lock; a drain that finds it held leaves a mark for the holder,
        which drains once more after letting go, so no row waits for the next event."""
        redis, names = self.context.redis, self.context.names
        lock = names.sink_drain_lock(self.sink_id, self.session)
        again = names.sink_drain_again(self.sink_id, self.session)
        token = secrets.token_hex(8)
        # From here a notice enqueues another drain: this one may already have read past its row.
        await redis.delete(names.sink_drain_queued(self.sink_id, self.session))
        while True:
            if not await redis.set(lock, token, nx=True, ex=LOCK_SECONDS):
                await redis.set(again, "1", ex=LOCK_SECONDS)
                # Taken back only if the holder let go before seeing the mark.
                if not await redis.set(lock, token, nx=True, ex=LOCK_SECONDS):
                    return
            try:
                await redis.delete(again)
                await self._drain()
            finally:
                if await redis.get(lock) == token:
                    await redis.delete(lock)
            if not await redis.exists(again):
                return

    async def _drain(self) -> None:
        engine, session_id = self.context.engine, self._session_id()
        async with tenant_transaction(engine, _admin(self.org_id)) as db:
            sink = await db.get(Webhook, self.sink_id)
            last = (
                await db.exec(
                    select(WebhookDelivery.position)
                    .where(
                        WebhookDelivery.webhook_id == self.sink_id,
                        WebhookDelivery.session_id == session_id,
                        WebhookDelivery.status != "pending",
                    )
                    .order_by(col(WebhookDelivery.position).desc())
                    .limit(1)
                )
            ).first()
        if sink is None or sink.direction != "sink" or not sink.enabled:
            return
        logged = await self._logged_since(sink, last) if self.session != NO_SESSION else []
        while True:
            async with tenant_transaction(engine, _admin(self.org_id)) as db:
                await insert_new(db, logged)
                logged = []
                rows = list(
                    await db.exec(
                        select(WebhookDelivery)
                        .where(
                            WebhookDelivery.webhook_id == self.sink_id,
                            WebhookDelivery.session_id == session_id,
                            WebhookDelivery.status == "pending",
                        )
                        .order_by(col(WebhookDelivery.position), col(WebhookDelivery.event_id))
                        .limit(BATCH)
                    )
                )
            if not rows:
                return
            await self._publish(sink, rows)
            if len(rows) < BATCH:
                return

    def _session_id(self) -> UUID | None:
        return None if self.session == NO_SESSION else UUID(self.session)

    async def _logged_since(self, sink: Webhook, last: str | None) -> list[WebhookDelivery]:
        """Rows for the session's subscribed events logged after the last one published or dead-lettered
        (and since the sink exists), whichever notices were handled: an event is never overtaken by a
        later one whose notice came sooner (its row may exist already; that one is left as it is)."""
        after = stream_id(last) if last else "0-0"
        rows: list[WebhookDelivery] = []
        while True:
            entries = await read_log(self.context.redis, self.context.names, self.session, after, count=BATCH)
            if not entries:
                return rows
            after = entries[-1][0]
            for entry_id, wire in entries:
                event = Event.from_wire(wire)
                if str(event.type) in sink.event_types and event.ts >= sink.created_at:
                    rows.append(delivery_row(sink, event, position(entry_id)))

    async def _publish(self, sink: Webhook, rows: list[WebhookDelivery]) -> None:
        settings = self.context.settings
        url = settings.key_ring().decrypt(sink.encrypted_secret, secret_ref(sink))
        template = sink.routing_key or ""
        messages = []
        for row in rows:
            document = to_cloudevent(Event.model_validate(row.payload), settings.public_base_url)
            messages.append(Outgoing(row.event_id, routing_key(template, document), encode(document)))
        sent, error = len(rows), None
        try:
            vetted = await check_broker_url(url, settings, resolver=self.resolver)
            addresses = [str(address) for address in vetted]
            await asyncio.to_thread(
                publish,
                *(str(sink.id), url, sink.exchange or "", messages, settings.sink_timeout_seconds, addresses),
            )
        except EgressRefused as exc:
            sent, error = 0, str(exc)
        except PublishFailed as exc:
            sent, error = exc.sent, exc.reason
        await self._record(sink, rows, sent, error)

    async def _record(self, sink: Webhook, rows: list[WebhookDelivery], sent: int, error: str | None) -> None:
        settings = self.context.settings
        now = datetime.now(UTC)
        async with tenant_transaction(self.context.engine, _admin(self.org_id)) as db:
            if sent:
                await db.exec(
                    update(WebhookDelivery)
                    .where(col(WebhookDelivery.id).in_([row.id for row in rows[:sent]]))
                    .values(
                        status="succeeded",
                        attempts=WebhookDelivery.attempts + 1,
                        delivered_at=now,
                        updated_at=now,
                        last_error=None,
                    )
                )
            if error is None:
                if sink.health != "ok":
                    await db.exec(
                        update(Webhook).where(col(Webhook.id) == sink.id).values(health="ok", last_error=None)
                    )
                return
            first = await db.get(WebhookDelivery, rows[sent].id)
            assert first is not None
            first.attempts += 1
            first.last_error, first.updated_at = error, now
            db.add(first)
            await db.exec(
                update(Webhook).where(col(Webhook.id) == sink.id).values(health="failing", last_error=error)
            )
            attempts = first.attempts
            if attempts >= settings.sink_max_attempts:
                await db.exec(
                    update(WebhookDelivery)
                    .where(
                        col(WebhookDelivery.webhook_id) == sink.id,
                        col(WebhookDelivery.session_id) == self._session_id(),
                        col(WebhookDelivery.status) == "pending",
                    )
                    .values(status="failed", updated_at=now)
                )
        if attempts >= settings.sink_max_attempts:
            log.warning(
                "sink %s failed %d times (%s); session %s's undelivered events are in the dead-letter view",
                *(sink.id, attempts, error, self.session),
            )
            return
        delay = min(settings.sink_backoff_seconds * 2 ** (attempts - 1), settings.sink_max_backoff_seconds)
        # The retry owns the pair until it runs: notices meanwhile add rows, not drains (each would
        # spend an attempt of the same budget).
        queued = self.context.names.sink_drain_queued(self.sink_id, self.session)
        await self.context.redis.set(queued, "1", ex=int(delay) + QUEUED_SECONDS)
        log.info("sink %s: %s; attempt %d again in %.1f s", sink.id, error, attempts + 1, delay)
        raise dramatiq.Retry(str(error), delay=int(delay * 1000))


def delivery_row(sink: Webhook, event: Event, at: str) -> WebhookDelivery:
    return WebhookDelivery(
        org_id=sink.org_id,
        webhook_id=sink.id,
        event_id=event.id,
        event_type=str(event.type),
        session_id=event.session_id,
        position=at,
        payload=json.loads(event.to_wire()),
    )


async def insert_new(db: AsyncSession, rows: list[WebhookDelivery]) -> None:
    """Insert the rows that do not exist yet (one per sink and event), in one statement."""
    if not rows:
        return
    statement = (
        dialect_insert(db, WebhookDelivery)
        .values([row.model_dump() for row in rows])
        .on_conflict_do_nothing(index_elements=["webhook_id", "event_id"])
    )
    await db.exec(statement)


def drain_key(event: Event) -> str:
    return str(event.session_id) if event.session_id else NO_SESSION
