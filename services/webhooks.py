"""Webhooks: inbound endpoints external systems sign their callbacks for, outbound subscriptions to
session events, and event sinks (the same subscriptions published to the organization's own message
bus, in CloudEvents form). Admins manage them; an inbound delivery is accepted once, signed
(``schemas.webhook_signing``), and becomes a ``webhook.received`` event for a worker to act on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from events.cloudevents import encode, to_cloudevent
from events.envelope import Event, EventType
from events.payloads import WebhookReceived, WebhookRedelivery
from events.publisher import publish
from events.sinks import DEFAULT_ROUTING_KEY, Outgoing, PublishFailed, redacted, routing_key
from events.sinks import publish as publish_to_sink
from schemas.crypto import KeyRingError
from schemas.db import MemberContext, TenantContext, tenant_transaction
from schemas.roles import ADMIN_ROLES
from schemas.tables import Membership, Webhook, WebhookDelivery, utcnow
from schemas.webhook_signing import ID_HEADER, new_secret, secret_ref, verify
from services.context import Backends
from services.egress import EgressRefused, check_broker_url, check_endpoint
from services.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated, Unavailable

DEDUP_SECONDS = 24 * 3600
# The public endpoint finds a webhook by id before it knows the organization.
LOOKUP = TenantContext(org_id=None, user_id=None, role="superadmin")
# What each direction may set; a field of another direction is refused by name.
FIELDS = {
    "inbound": {"action"},
    "outbound": {"target_url", "event_types", "format"},
    "sink": {"broker_url", "exchange", "routing_key", "event_types"},
}


@dataclass(frozen=True)
class WebhookSpec:
    """A new webhook as the admin wants it (its shape already checked)."""

    name: str
    direction: str
    # Inbound: what a delivery does (``type``, ``template``…); runs as the admin who sets it.
    action: dict[str, Any]
    target_url: str | None
    event_types: list[str]
    format: str | None
    broker_url: str | None
    exchange: str | None
    routing_key: str | None


@dataclass(frozen=True)
class SinkTest:
    event_id: str
    exchange: str
    routing_key: str
    # The broker's answer when it did not confirm the test event.
    error: str | None
    elapsed_ms: float


def admin_only(ctx: MemberContext) -> MemberContext:
    if ctx.role not in ADMIN_ROLES:
        raise Forbidden("only organization admins manage webhooks")
    return ctx


async def _check_target(backends: Backends, url: str) -> None:
    """Outbound targets pass the same egress rules as MCP endpoints."""
    try:
        await check_endpoint(url, backends.settings, "target_url")
    except EgressRefused as exc:
        raise Invalid(str(exc), [(exc.field, exc.reason)]) from exc


async def _check_broker(backends: Backends, url: str) -> list[str]:
    """The broker's vetted addresses, which its connections go to (422 naming the field otherwise)."""
    try:
        return [str(address) for address in await check_broker_url(url, backends.settings)]
    except EgressRefused as exc:
        raise Invalid(str(exc), [(exc.field, exc.reason)]) from exc


async def _set_broker(backends: Backends, row: Webhook, url: str) -> None:
    """Check and seal a sink's broker URL; the row shows it without the password."""
    await _check_broker(backends, url)
    try:
        row.encrypted_secret = backends.settings.key_ring().encrypt(url, secret_ref(row))
    except KeyRingError as exc:
        raise Unavailable(str(exc)) from exc
    row.target_url = redacted(url)


def _open_secret(backends: Backends, row: Webhook) -> str:
    try:
        return backends.settings.key_ring().decrypt(row.encrypted_secret, secret_ref(row))
    except (KeyRingError, ValueError) as exc:
        raise Unavailable("this webhook's secret cannot be opened") from exc


def _stored_action(action: dict[str, Any], ctx: MemberContext) -> dict[str, Any]:
    stored = dict(action)
    if stored:
        # The action runs as the admin who set it (quotas and prompts are theirs).
        stored["run_as_user_id"] = str(ctx.user_id)
    return stored


def _new_secret(backends: Backends, row: Webhook) -> str:
    """A fresh secret, sealed into ``row``; the plain one is for the answer only."""
    secret = new_secret()
    try:
        row.encrypted_secret = backends.settings.key_ring().encrypt(secret, secret_ref(row))
    except KeyRingError as exc:
        raise Unavailable(str(exc)) from exc
    return secret


async def find_webhook(backends: Backends, ctx: MemberContext, webhook_id: UUID) -> Webhook:
    async with tenant_transaction(backends.engine, ctx) as db:
        row = await db.get(Webhook, webhook_id)
    if row is None or row.org_id != ctx.org_id:
        raise NotFound("webhook not found")
    return row


async def create_webhook(
    backends: Backends, ctx: MemberContext, spec: WebhookSpec
) -> tuple[Webhook, str | None]:
    """The new webhook and its secret (None for a sink: its credentials are in its broker URL)."""
    if spec.target_url:
        await _check_target(backends, spec.target_url)
    row = Webhook(
        id=uuid4(),
        org_id=ctx.org_id,
        name=spec.name,
        direction=spec.direction,
        action=_stored_action(spec.action, ctx),
        target_url=spec.target_url,
        event_types=spec.event_types,
        encrypted_secret="",
        format="cloudevents" if spec.direction == "sink" else (spec.format or "native"),
    )
    secret: str | None = None
    if spec.direction == "sink":
        assert spec.broker_url is not None
        await _set_broker(backends, row, spec.broker_url)
        row.exchange = spec.exchange or ""
        row.routing_key = spec.routing_key or DEFAULT_ROUTING_KEY
    else:
        secret = _new_secret(backends, row)
    try:
        async with tenant_transaction(backends.engine, ctx) as db:
            db.add(row)
    except IntegrityError as exc:
        raise Conflict(f"a webhook named {spec.name!r} already exists") from exc
    return row, secret


async def update_webhook(
    backends: Backends, ctx: MemberContext, webhook_id: UUID, changes: dict[str, Any]
) -> Webhook:
    """``changes``: the fields to set, none null; an ``action`` as stored, less who it runs as."""
    row = await find_webhook(backends, ctx, webhook_id)
    wrong = sorted(set(changes) & (set().union(*FIELDS.values()) - FIELDS[row.direction]))
    if wrong:
        raise Invalid(
            f"not a field of {'a sink' if row.direction == 'sink' else f'an {row.direction} webhook'}",
            [(name, f"not used by {row.direction} webhooks") for name in wrong],
        )
    changes = dict(changes)
    if "target_url" in changes:
        await _check_target(backends, changes["target_url"])
    if "broker_url" in changes:
        await _set_broker(backends, row, changes.pop("broker_url"))
        row.health, row.last_error = "ok", None
    if "action" in changes:
        changes["action"] = _stored_action(changes["action"], ctx)
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    try:
        async with tenant_transaction(backends.engine, ctx) as db:
            await db.merge(row)
    except IntegrityError as exc:
        raise Conflict(f"a webhook named {row.name!r} already exists") from exc
    return row


async def rotate_secret(backends: Backends, ctx: MemberContext, webhook_id: UUID) -> tuple[Webhook, str]:
    """Replaces the webhook's secret at once (the old one stops working)."""
    row = await find_webhook(backends, ctx, webhook_id)
    if row.direction == "sink":
        raise Conflict("a sink's credentials are in its broker_url: PATCH that")
    secret = _new_secret(backends, row)
    row.updated_at = utcnow()
    async with tenant_transaction(backends.engine, ctx) as db:
        await db.merge(row)
    return row, secret


async def test_sink(
    backends: Backends, ctx: MemberContext, webhook_id: UUID, correlation_id: str
) -> SinkTest:
    """Publishes a test CloudEvent to the sink now and reports the broker's answer (within
    AGENTAPI_SINK_TIMEOUT_SECONDS); the sink's delivery state is left as it is."""
    row = await find_webhook(backends, ctx, webhook_id)
    if row.direction != "sink":
        raise Conflict("only sinks are tested here")
    url = _open_secret(backends, row)
    addresses = await _check_broker(backends, url)
    test = Event(
        type=EventType.WEBHOOK_TEST,
        org_id=row.org_id,
        user_id=ctx.user_id,
        correlation_id=correlation_id,
        payload={"webhook_id": str(row.id)},
    )
    document = to_cloudevent(test, backends.settings.public_base_url)
    key = routing_key(row.routing_key or DEFAULT_ROUTING_KEY, document)
    started = time.perf_counter()
    error = None
    try:
        await asyncio.to_thread(
            publish_to_sink,
            str(row.id),
            url,
            row.exchange or "",
            [Outgoing(test.id, key, encode(document))],
            backends.settings.sink_timeout_seconds,
            addresses,
        )
    except PublishFailed as exc:
        error = exc.reason
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return SinkTest(test.id, row.exchange or "", key, error, elapsed_ms)


async def list_webhooks(backends: Backends, ctx: MemberContext) -> list[Webhook]:
    async with tenant_transaction(backends.engine, ctx) as db:
        return list(
            await db.exec(
                select(Webhook).where(Webhook.org_id == ctx.org_id).order_by(col(Webhook.created_at))
            )
        )


async def delete_webhook(backends: Backends, ctx: MemberContext, webhook_id: UUID) -> None:
    row = await find_webhook(backends, ctx, webhook_id)
    async with tenant_transaction(backends.engine, ctx) as db:
        await db.delete(await db.get(Webhook, row.id))


async def list_deliveries(
    backends: Backends, ctx: MemberContext, status: str | None, limit: int
) -> list[WebhookDelivery]:
    """The outbound delivery log, newest first; ``failed`` is the dead-letter view."""
    query = select(WebhookDelivery).where(WebhookDelivery.org_id == ctx.org_id)
    if status:
        query = query.where(WebhookDelivery.status == status)
    async with tenant_transaction(backends.engine, ctx) as db:
        return list(await db.exec(query.order_by(col(WebhookDelivery.created_at).desc()).limit(limit)))


async def redeliver(backends: Backends, ctx: MemberContext, delivery_id: UUID, correlation_id: str) -> str:
    """Sends a dead-lettered delivery again, with a fresh attempt budget; the event id."""
    async with tenant_transaction(backends.engine, ctx) as db:
        row = await db.get(WebhookDelivery, delivery_id)
        if row is None or row.org_id != ctx.org_id:
            raise NotFound("delivery not found")
        if row.status != "failed":
            raise Conflict(f"the delivery is {row.status}; only failed ones are redelivered")
        row.status, row.attempts = "pending", 0
        db.add(row)
    event = Event(
        type=EventType.WEBHOOK_NOTIFY_REQUESTED,
        org_id=ctx.org_id,
        user_id=ctx.user_id,
        correlation_id=correlation_id,
        payload=WebhookRedelivery(delivery_id=str(delivery_id)).payload(),
    )
    await publish(backends.redis, backends.names, event)
    return event.id


async def find_inbound(backends: Backends, webhook_id: UUID) -> Webhook:
    """An enabled inbound webhook by id alone (its sender has no token)."""
    async with tenant_transaction(backends.engine, LOOKUP) as db:
        row = await db.get(Webhook, webhook_id)
    if row is None or row.direction != "inbound" or not row.enabled:
        raise NotFound("webhook not found")
    return row


async def _still_admin(backends: Backends, org_id: UUID, user_id: UUID) -> bool:
    """A webhook's action runs as the admin who set it, only while they are one: a removed
    admin's webhook went on starting sessions owned by them."""
    async with tenant_transaction(backends.engine, LOOKUP) as db:
        role = (
            await db.exec(
                select(Membership.role).where(
                    Membership.org_id == org_id,
                    Membership.user_id == user_id,
                    col(Membership.removed_at).is_(None),
                )
            )
        ).first()
    return role in ADMIN_ROLES


async def accept_delivery(
    backends: Backends, row: Webhook, headers: Mapping[str, str], body: bytes, correlation_id: str
) -> str:
    """A signed delivery to an inbound webhook (Standard Webhooks, each signed ``webhook-id``
    accepted once in 24 hours), published as ``webhook.received``; the event id."""
    problem = verify(_open_secret(backends, row), headers, body)
    if problem:
        raise Unauthenticated(problem)
    # Signed together with the body, so a replay under a fresh id fails the signature above.
    delivery_id = headers[ID_HEADER]
    run_as = UUID(row.action["run_as_user_id"])
    if not await _still_admin(backends, row.org_id, run_as):
        raise Conflict(
            "this webhook's action runs as a user who is no longer an admin of the organization;"
            " an admin must set its action again"
        )
    try:
        document: Any = json.loads(body) if body else None
    except ValueError:
        document = body.decode(errors="replace")
    seen = backends.names.webhook_delivery_seen(row.id, delivery_id)
    if not await backends.redis.set(seen, "1", nx=True, ex=DEDUP_SECONDS):
        raise Conflict(f"delivery {delivery_id!r} was already received")
    event = Event(
        type=EventType.WEBHOOK_RECEIVED,
        org_id=row.org_id,
        user_id=run_as,
        session_id=UUID(row.action["session_id"]) if row.action.get("session_id") else None,
        correlation_id=correlation_id,
        payload=WebhookReceived(webhook_id=str(row.id), delivery_id=delivery_id, body=document).payload(),
    )
    try:
        await publish(backends.redis, backends.names, event)
    except Exception:
        # Not published: let the sender's retry of the same delivery id through.
        await backends.redis.delete(seen)
        raise
    return event.id
