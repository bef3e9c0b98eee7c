"""The ``default`` pool's webhook work: running inbound deliveries' actions, fanning results out to
outbound subscriptions, and delivering those with exponential backoff into a dead-letter view."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from uuid import UUID

import dramatiq
import httpx2
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from events.cloudevents import CONTENT_TYPE, encode, to_cloudevent
from events.envelope import Event
from events.payloads import WebhookReceived, WebhookRedelivery, webhook_notify
from schemas.db import MemberContext, TenantContext, tenant_transaction
from schemas.tables import Webhook, WebhookDelivery
from schemas.webhook_signing import secret_ref, signed_headers
from services.agents import canonical_agent_type
from services.egress import EgressRefused
from services.errors import DomainError
from services.sessions.input import queue_webhook_message
from services.sessions.start import NewSession, start_session
from workers.actors.sinks import request_drain
from workers.context import WorkerContext, current
from workers.event_context import current_event
from workers.sinks import NO_SESSION, delivery_row, drain_key, insert_new, position
from workers.webhook_post import post_delivery

log = logging.getLogger(__name__)


def _admin(org_id: UUID | None) -> TenantContext:
    return TenantContext(org_id=org_id, user_id=None, role="admin")


def render(template: str, body: object) -> str:
    """The action's message: ``{body}`` becomes the delivery's body (text as is, JSON as JSON)."""
    return template.replace("{body}", body if isinstance(body, str) else json.dumps(body))


@dramatiq.actor(queue_name="default", actor_name="run_webhook_action", max_retries=5, envelope=True)
async def run_webhook_action(envelope: str) -> None:
    """Carry out an inbound delivery's action: start a session, or post to one."""
    event = current_event()
    context = current()
    delivery = WebhookReceived.of(event)
    async with tenant_transaction(context.engine, _admin(event.org_id)) as db:
        hook = await db.get(Webhook, UUID(delivery.webhook_id))
    if hook is None or not hook.enabled:
        log.info("webhook %s is gone or disabled; delivery dropped", delivery.webhook_id)
        return
    action = hook.action
    message = render(str(action["template"]), delivery.body)
    if action["type"] == "start_session":
        await _start(context, event, delivery, action, message)
    else:
        await _post(context, event, delivery, UUID(str(action["session_id"])), message)


async def _start(
    context: WorkerContext, event: Event, delivery: WebhookReceived, action: dict[str, object], message: str
) -> None:
    if event.org_id is None:
        log.warning(
            "webhook %s could not start a session: the delivery names no organization", delivery.webhook_id
        )
        return
    actor = MemberContext(org_id=event.org_id, user_id=UUID(str(action["run_as_user_id"])), role="admin")
    new = NewSession(
        agent_type=canonical_agent_type(str(action["agent_type"])),
        custom_agent=str(action["custom_agent"]) if action.get("custom_agent") else None,
        prompt=message,
        title=f"webhook delivery {delivery.delivery_id}",
    )
    try:
        # The ingress's own service, so quotas, prompts and publish-after-commit are the same.
        row, _ = await start_session(context, actor, new)
    except DomainError as exc:
        log.warning("webhook %s could not start a session: %s", delivery.webhook_id, exc.detail)
        return
    log.info("webhook %s started session %s", delivery.webhook_id, row.id)


async def _post(
    context: WorkerContext, event: Event, delivery: WebhookReceived, session_id: UUID, message: str
) -> None:
    if event.org_id is None or not await queue_webhook_message(context, event.org_id, session_id, message):
        log.warning("webhook %s: session %s is not active; message dropped", delivery.webhook_id, session_id)


@dramatiq.actor(queue_name="default", actor_name="notify_webhooks", max_retries=5, envelope=True)
async def notify_webhooks(envelope: str) -> None:
    """One delivery per subscription to the reported event (idempotent: one row per webhook and event),
    or a redelivery an admin asked for."""
    event = current_event()
    context = current()
    notice = webhook_notify(event)
    if isinstance(notice, WebhookRedelivery):
        await _redeliver(context, UUID(notice.delivery_id), event.org_id)
        return
    source = notice.source()
    at = position(notice.stream_id) if notice.stream_id else ""
    async with tenant_transaction(context.engine, _admin(event.org_id)) as db:
        hooks = [
            hook
            for hook in await db.exec(
                select(Webhook).where(
                    Webhook.org_id == event.org_id,
                    col(Webhook.direction).in_(("outbound", "sink")),
                    Webhook.enabled,
                )
            )
            if str(source.type) in hook.event_types
        ]
        sinks = [hook for hook in hooks if hook.direction == "sink"]
        # The event's own row, in case its session's log no longer holds it when the drain reads.
        await insert_new(db, [delivery_row(sink, source, at) for sink in sinks])
    for sink in sinks:
        await request_drain(context, sink.id, event.org_id, drain_key(source))
    for hook in hooks:
        if hook.direction == "sink":
            continue
        delivery = WebhookDelivery(
            org_id=hook.org_id,
            webhook_id=hook.id,
            event_id=source.id,
            event_type=str(source.type),
            payload=json.loads(source.to_wire()),
        )
        try:
            async with tenant_transaction(context.engine, _admin(event.org_id)) as db:
                db.add(delivery)
        except IntegrityError:
            continue  # a redelivered notice: this subscription has its delivery already
        await _enqueue(str(delivery.id), str(event.org_id))


async def _redeliver(context: WorkerContext, delivery_id: UUID, org_id: UUID) -> None:
    """An admin's redelivery: a sink's goes out through its session's drain, in order."""
    async with tenant_transaction(context.engine, _admin(org_id)) as db:
        delivery = await db.get(WebhookDelivery, delivery_id)
        hook = await db.get(Webhook, delivery.webhook_id) if delivery else None
    if delivery is None or hook is None:
        return
    if hook.direction == "sink":
        session = str(delivery.session_id) if delivery.session_id else NO_SESSION
        await request_drain(context, hook.id, org_id, session)
    else:
        await _enqueue(str(delivery_id), str(org_id))


async def _enqueue(delivery_id: str, org_id: str, delay_ms: int | None = None) -> None:
    await asyncio.to_thread(deliver_webhook.send_with_options, args=(delivery_id, org_id), delay=delay_ms)


@dramatiq.actor(queue_name="default", actor_name="deliver_webhook", max_retries=0)
async def deliver_webhook(delivery_id: str, org_id: str) -> None:
    """One signed POST; a failure schedules the next attempt (doubling delays) until the budget ends."""
    context = current()
    settings = context.settings
    tenant = _admin(UUID(org_id))
    async with tenant_transaction(context.engine, tenant) as db:
        delivery = await db.get(WebhookDelivery, UUID(delivery_id))
        hook = await db.get(Webhook, delivery.webhook_id) if delivery else None
    if delivery is None or hook is None or delivery.status != "pending" or not hook.target_url:
        return
    secret = settings.key_ring().decrypt(hook.encrypted_secret, secret_ref(hook))
    headers: dict[str, str] = {}
    if hook.format == "cloudevents":
        document = to_cloudevent(Event.model_validate(delivery.payload), settings.public_base_url)
        body, headers["Content-Type"] = encode(document), CONTENT_TYPE
    else:
        body = json.dumps(delivery.payload).encode()
    code: int | None = None
    try:
        code = await post_delivery(
            hook.target_url, body, {**signed_headers(secret, str(delivery.id), body), **headers}, settings
        )
        error = None if 200 <= code < 300 else f"answered {code}"
    except (httpx2.HTTPError, EgressRefused) as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
    async with tenant_transaction(context.engine, tenant) as db:
        row = await db.get(WebhookDelivery, delivery.id)
        assert row is not None
        row.attempts += 1
        row.last_status_code, row.last_error, row.updated_at = code, error, datetime.now(UTC)
        if error is None:
            row.status, row.delivered_at = "succeeded", row.updated_at
        elif row.attempts >= settings.webhook_max_attempts:
            row.status = "failed"
        db.add(row)
        attempts, status = row.attempts, row.status
    if status == "pending":
        delay = settings.webhook_backoff_seconds * 2 ** (attempts - 1)
        await _enqueue(delivery_id, org_id, int(delay * 1000))
    elif status == "failed":
        log.warning(
            "webhook delivery %s failed %d times; it is in the dead-letter view", delivery_id, attempts
        )
