"""Webhooks: inbound endpoints external systems sign their callbacks for, outbound subscriptions to
session events, and event sinks (the same subscriptions published to the organization's own message
bus, in CloudEvents form). Admins manage them; inbound deliveries are public but signed
(schemas.webhook_signing).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.params import Parameter
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from api.audit_trail import audit_under
from api.auth import Principal
from api.correlation import current_correlation_id
from api.problems import StrictBody
from api.state import Resources, resources
from api.tenancy import tenant_context
from events.cloudevents import encode, to_cloudevent
from events.envelope import NOTIFIED_TYPES, Event, EventType
from events.publisher import publish
from events.sinks import (
    DEFAULT_ROUTING_KEY,
    Outgoing,
    PublishFailed,
    check_exchange,
    check_routing_key,
    redacted,
    routing_key,
)
from events.sinks import publish as publish_to_sink
from schemas.crypto import KeyRingError
from schemas.db import TenantContext, tenant_transaction
from schemas.roles import ADMIN_ROLES
from schemas.tables import Membership, Webhook, WebhookDelivery, utcnow
from schemas.webhook_signing import ID_HEADER, new_secret, secret_ref, verify
from services.egress import EgressRefused, check_broker_url, check_endpoint
from workers.agents import canonical_agent_type

MAX_INBOUND_BYTES = 256 * 1024
DEDUP_SECONDS = 24 * 3600
# The public endpoint finds a webhook by id before it knows the organization.
LOOKUP = TenantContext(org_id=None, user_id=None, role="superadmin")


class Action(StrictBody):
    type: Literal["start_session", "post_message"]
    agent_type: str | None = Field(None, max_length=32)
    custom_agent: str | None = Field(None, max_length=64)
    session_id: UUID | None = None
    template: str = Field(
        min_length=1,
        max_length=10_000,
        description="the message; `{body}` is replaced by the delivery's body",
    )

    @model_validator(mode="after")
    def _complete(self) -> Action:
        if self.type == "start_session":
            if not self.agent_type:
                raise ValueError("start_session needs agent_type")
            self.agent_type = canonical_agent_type(self.agent_type)
        elif self.session_id is None:
            raise ValueError("post_message needs session_id")
        return self


Format = Literal["native", "cloudevents"]
# What each direction may set; a field of another direction is refused by name.
FIELDS = {
    "inbound": {"action"},
    "outbound": {"target_url", "event_types", "format"},
    "sink": {"broker_url", "exchange", "routing_key", "event_types"},
}
BROKER_URL_HELP = (
    "sinks: amqp://, amqps://, sqs:// or redis:// URL, credentials included (sealed, never shown again)"
)


class WebhookIn(StrictBody):
    name: str = Field(min_length=1, max_length=100)
    direction: Literal["inbound", "outbound", "sink"]
    action: Action | None = None
    target_url: str | None = Field(None, max_length=2048)
    event_types: list[str] = Field(default_factory=list, max_length=20)
    format: Format | None = Field(None, description="outbound: `native` (default) or `cloudevents` bodies")
    broker_url: str | None = Field(None, max_length=2048, description=BROKER_URL_HELP)
    exchange: str | None = Field(
        None, max_length=255, description="sinks: a topic exchange (AMQP); empty = straight to a queue"
    )
    routing_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="sinks: template over {org_id}, {type}, {session_id}, {user_id}; default {org_id}.{type}",
    )

    @model_validator(mode="after")
    def _shape(self) -> WebhookIn:
        sent = {name for name in self.model_fields_set if getattr(self, name) not in (None, [])}
        foreign = sorted(sent & (set().union(*FIELDS.values()) - FIELDS[self.direction]))
        if foreign:
            raise ValueError(f"{', '.join(foreign)}: not used by {self.direction} webhooks")
        if self.direction == "inbound" and self.action is None:
            raise ValueError("an inbound webhook needs an action")
        if self.direction == "outbound" and (not self.target_url or not self.event_types):
            raise ValueError("an outbound webhook needs target_url and event_types")
        if self.direction == "sink" and (not self.broker_url or not self.event_types):
            raise ValueError("a sink needs broker_url and event_types")
        if self.event_types:
            _check_event_types(self.event_types)
        _check_sink_fields(self.exchange, self.routing_key)
        return self


def _check_sink_fields(exchange: str | None, template: str | None) -> None:
    if exchange:
        check_exchange(exchange)
    if template:
        check_routing_key(template)


def _check_event_types(event_types: list[str]) -> None:
    unknown = sorted(set(event_types) - {str(t) for t in NOTIFIED_TYPES})
    if unknown:
        raise ValueError(f"unknown event types {unknown}; one of {sorted(map(str, NOTIFIED_TYPES))}")


class WebhookPatch(StrictBody):
    """The fields to change; the direction is fixed (create another webhook for the other one)."""

    name: str | None = Field(None, min_length=1, max_length=100)
    enabled: bool | None = Field(
        None, description="a disabled webhook refuses deliveries and gets no notices"
    )
    action: Action | None = Field(None, description="inbound webhooks only")
    target_url: str | None = Field(None, max_length=2048, description="outbound webhooks only")
    event_types: list[str] | None = Field(
        None, min_length=1, max_length=20, description="outbound webhooks and sinks"
    )
    format: Format | None = Field(None, description="outbound webhooks only")
    broker_url: str | None = Field(None, max_length=2048, description=BROKER_URL_HELP)
    exchange: str | None = Field(None, max_length=255, description="sinks only")
    routing_key: str | None = Field(None, min_length=1, max_length=255, description="sinks only")

    @model_validator(mode="after")
    def _shape(self) -> WebhookPatch:
        if not self.model_fields_set:
            raise ValueError("nothing to change: send at least one field")
        if self.event_types is not None:
            _check_event_types(self.event_types)
        _check_sink_fields(self.exchange, self.routing_key)
        return self

    def changes(self) -> dict[str, Any]:
        """The fields sent, each refused when null (every field here has a value once set)."""
        sent = {name: getattr(self, name) for name in sorted(self.model_fields_set)}
        # An empty exchange is a value (the default exchange), not a missing one.
        nulls = [name for name, value in sent.items() if value is None]
        if nulls:
            raise ValidationException(
                "fields cannot be null", extra=[{"key": name, "message": "cannot be null"} for name in nulls]
            )
        return sent


class WebhookOut(BaseModel):
    id: UUID
    name: str
    direction: str
    action: dict[str, Any]
    target_url: str | None
    event_types: list[str]
    enabled: bool
    created_at: datetime
    deliveries_url: str | None
    format: str
    broker_url: str | None = Field(description="sinks: the broker URL without its password")
    exchange: str | None
    routing_key: str | None
    health: str = Field(description="sinks: `failing` while the broker refuses or cannot be reached")
    last_error: str | None = Field(description="sinks: the broker's last error while failing")


class WebhookCreated(WebhookOut):
    secret: str | None = Field(
        description="shown once: sign inbound deliveries / verify outbound ones with it (null for sinks:"
        " their credentials are in broker_url)"
    )


class SinkTestOut(BaseModel):
    ok: bool
    event_id: str
    exchange: str
    routing_key: str
    error: str | None = Field(description="the broker's answer when it did not confirm the test event")
    elapsed_ms: float


class DeliveryOut(BaseModel):
    id: UUID
    webhook_id: UUID
    event_id: str
    event_type: str
    session_id: UUID | None
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class Accepted(BaseModel):
    accepted: bool = True
    event_id: str


def _out(row: Webhook) -> dict[str, Any]:
    sink = row.direction == "sink"
    return {
        "id": row.id,
        "name": row.name,
        "direction": row.direction,
        "action": row.action,
        # A sink keeps its redacted broker URL here (the full one is sealed in encrypted_secret).
        "target_url": None if sink else row.target_url,
        "broker_url": row.target_url if sink else None,
        "event_types": row.event_types,
        "enabled": row.enabled,
        "created_at": row.created_at,
        "deliveries_url": f"/api/v1/webhooks/{row.id}/deliveries" if row.direction == "inbound" else None,
        "format": row.format,
        "exchange": row.exchange,
        "routing_key": row.routing_key,
        "health": row.health,
        "last_error": row.last_error,
    }


def _admin(principal: Principal) -> TenantContext:
    ctx = tenant_context(principal)
    if ctx.role not in ADMIN_ROLES:
        raise PermissionDeniedException("only organization admins manage webhooks")
    return ctx


class WebhookController(Controller):
    path = "/api/v1/webhooks"
    tags = ("webhooks",)

    @post("/", status_code=201)
    async def create_webhook(
        self, data: WebhookIn, request: Request[Principal, str, State], state: State
    ) -> WebhookCreated:
        """Create an inbound endpoint or an outbound subscription; the answer shows its secret, once."""
        res = resources(state)
        ctx = _admin(request.user)
        assert ctx.org_id is not None
        if data.target_url:
            await _check_target(res, data.target_url)
        row = Webhook(
            id=uuid4(),
            org_id=ctx.org_id,
            name=data.name,
            direction=data.direction,
            action=_stored_action(data.action, ctx),
            target_url=data.target_url,
            event_types=data.event_types,
            encrypted_secret="",
            format="cloudevents" if data.direction == "sink" else (data.format or "native"),
        )
        secret: str | None = None
        if data.direction == "sink":
            assert data.broker_url is not None
            await _set_broker(res, row, data.broker_url)
            row.exchange = data.exchange or ""
            row.routing_key = data.routing_key or DEFAULT_ROUTING_KEY
        else:
            secret = _new_secret(res, row)
        try:
            async with tenant_transaction(res.engine, ctx) as db:
                db.add(row)
        except IntegrityError as exc:
            raise ClientException(f"a webhook named {data.name!r} already exists", status_code=409) from exc
        return WebhookCreated(**_out(row), secret=secret)

    @patch("/{webhook_id:uuid}")
    async def update_webhook(
        self, webhook_id: UUID, data: WebhookPatch, request: Request[Principal, str, State], state: State
    ) -> WebhookOut:
        """Change a webhook's name, enabled flag, action (inbound) or target and event types (outbound)."""
        res = resources(state)
        ctx = _admin(request.user)
        row = await _find(res, ctx, webhook_id)
        changes = data.changes()
        wrong = sorted(set(changes) & (set().union(*FIELDS.values()) - FIELDS[row.direction]))
        if wrong:
            raise ValidationException(
                f"not a field of {'a sink' if row.direction == 'sink' else f'an {row.direction} webhook'}",
                extra=[{"key": name, "message": f"not used by {row.direction} webhooks"} for name in wrong],
            )
        if "target_url" in changes:
            await _check_target(res, changes["target_url"])
        if "broker_url" in changes:
            await _set_broker(res, row, changes.pop("broker_url"))
            row.health, row.last_error = "ok", None
        if "action" in changes:
            changes["action"] = _stored_action(data.action, ctx)
        for name, value in changes.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
        try:
            async with tenant_transaction(res.engine, ctx) as db:
                await db.merge(row)
        except IntegrityError as exc:
            raise ClientException(f"a webhook named {row.name!r} already exists", status_code=409) from exc
        return WebhookOut(**_out(row))

    @post("/{webhook_id:uuid}/secret", status_code=201)
    async def rotate_secret(
        self, webhook_id: UUID, request: Request[Principal, str, State], state: State
    ) -> WebhookCreated:
        """Replace the webhook's secret at once (the old one stops working); the answer shows it, once."""
        res = resources(state)
        ctx = _admin(request.user)
        row = await _find(res, ctx, webhook_id)
        if row.direction == "sink":
            raise ClientException("a sink's credentials are in its broker_url: PATCH that", status_code=409)
        secret = _new_secret(res, row)
        row.updated_at = utcnow()
        async with tenant_transaction(res.engine, ctx) as db:
            await db.merge(row)
        return WebhookCreated(**_out(row), secret=secret)

    @post("/{webhook_id:uuid}/test", status_code=200)
    async def test_sink(
        self, webhook_id: UUID, request: Request[Principal, str, State], state: State
    ) -> SinkTestOut:
        """Publish a `dev.agentapi.webhook.test` CloudEvent to the sink now and report the broker's answer
        (within AGENTAPI_SINK_TIMEOUT_SECONDS); the sink's delivery state is left as it is."""
        res = resources(state)
        ctx = _admin(request.user)
        row = await _find(res, ctx, webhook_id)
        if row.direction != "sink":
            raise ClientException("only sinks are tested here", status_code=409)
        url = _open_secret(res, row)
        await _check_broker(res, url)
        test = Event(
            type=EventType.WEBHOOK_TEST,
            org_id=row.org_id,
            user_id=ctx.user_id,
            correlation_id=current_correlation_id(),
            payload={"webhook_id": str(row.id)},
        )
        document = to_cloudevent(test, res.settings.public_base_url)
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
                res.settings.sink_timeout_seconds,
            )
        except PublishFailed as exc:
            error = exc.reason
        return SinkTestOut(
            ok=error is None,
            event_id=test.id,
            exchange=row.exchange or "",
            routing_key=key,
            error=error,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    @get("/")
    async def list_webhooks(self, request: Request[Principal, str, State], state: State) -> list[WebhookOut]:
        res = resources(state)
        ctx = _admin(request.user)
        async with tenant_transaction(res.engine, ctx) as db:
            rows = await db.exec(
                select(Webhook).where(Webhook.org_id == ctx.org_id).order_by(col(Webhook.created_at))
            )
            return [WebhookOut(**_out(r)) for r in rows]

    @get("/{webhook_id:uuid}")
    async def get_webhook(
        self, webhook_id: UUID, request: Request[Principal, str, State], state: State
    ) -> WebhookOut:
        return WebhookOut(**_out(await _find(resources(state), _admin(request.user), webhook_id)))

    @delete("/{webhook_id:uuid}", status_code=204)
    async def delete_webhook(
        self, webhook_id: UUID, request: Request[Principal, str, State], state: State
    ) -> None:
        res = resources(state)
        ctx = _admin(request.user)
        row = await _find(res, ctx, webhook_id)
        async with tenant_transaction(res.engine, ctx) as db:
            await db.delete(await db.get(Webhook, row.id))

    @get("/deliveries")
    async def list_deliveries(
        self,
        request: Request[Principal, str, State],
        state: State,
        status: Annotated[Literal["pending", "succeeded", "failed"] | None, Parameter()] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> list[DeliveryOut]:
        """The outbound delivery log, newest first; `status=failed` is the dead-letter view."""
        res = resources(state)
        ctx = _admin(request.user)
        query = select(WebhookDelivery).where(WebhookDelivery.org_id == ctx.org_id)
        if status:
            query = query.where(WebhookDelivery.status == status)
        async with tenant_transaction(res.engine, ctx) as db:
            rows = await db.exec(query.order_by(col(WebhookDelivery.created_at).desc()).limit(limit))
            return [DeliveryOut(**r.model_dump()) for r in rows]

    @post("/deliveries/{delivery_id:uuid}/redeliver", status_code=202)
    async def redeliver(
        self, delivery_id: UUID, request: Request[Principal, str, State], state: State
    ) -> Accepted:
        """Send a dead-lettered delivery again, with a fresh attempt budget."""
        res = resources(state)
        ctx = _admin(request.user)
        async with tenant_transaction(res.engine, ctx) as db:
            row = await db.get(WebhookDelivery, delivery_id)
            if row is None or row.org_id != ctx.org_id:
                raise NotFoundException("delivery not found")
            if row.status != "failed":
                raise ClientException(
                    f"the delivery is {row.status}; only failed ones are redelivered", status_code=409
                )
            row.status, row.attempts = "pending", 0
            db.add(row)
        event = Event(
            type=EventType.WEBHOOK_NOTIFY_REQUESTED,
            org_id=ctx.org_id,
            user_id=ctx.user_id,
            correlation_id=current_correlation_id(),
            payload={"delivery_id": str(delivery_id)},
        )
        await publish(res.redis, res.names, event)
        return Accepted(event_id=event.id)


async def _check_target(res: Resources, url: str) -> None:
    """Outbound targets pass the same egress rules as MCP endpoints."""
    try:
        await check_endpoint(url, res.settings, "target_url")
    except EgressRefused as exc:
        raise ValidationException(str(exc), extra=[{"key": exc.field, "message": exc.reason}]) from exc


async def _check_broker(res: Resources, url: str) -> None:
    try:
        await check_broker_url(url, res.settings)
    except EgressRefused as exc:
        raise ValidationException(str(exc), extra=[{"key": exc.field, "message": exc.reason}]) from exc


async def _set_broker(res: Resources, row: Webhook, url: str) -> None:
    """Check and seal a sink's broker URL; the row shows it without the password."""
    await _check_broker(res, url)
    try:
        row.encrypted_secret = res.settings.key_ring().encrypt(url, secret_ref(row))
    except KeyRingError as exc:
        raise ClientException(str(exc), status_code=503) from exc
    row.target_url = redacted(url)


def _open_secret(res: Resources, row: Webhook) -> str:
    try:
        return res.settings.key_ring().decrypt(row.encrypted_secret, secret_ref(row))
    except (KeyRingError, ValueError) as exc:
        raise ClientException("this webhook's secret cannot be opened", status_code=503) from exc


def _stored_action(action: Action | None, ctx: TenantContext) -> dict[str, Any]:
    stored = action.model_dump(mode="json", exclude_none=True) if action else {}
    if stored:
        # The action runs as the admin who set it (quotas and prompts are theirs).
        stored["run_as_user_id"] = str(ctx.user_id)
    return stored


def _new_secret(res: Resources, row: Webhook) -> str:
    """A fresh secret, sealed into ``row``; the plain one is for the answer only."""
    secret = new_secret()
    try:
        row.encrypted_secret = res.settings.key_ring().encrypt(secret, secret_ref(row))
    except KeyRingError as exc:
        raise ClientException(str(exc), status_code=503) from exc
    return secret


async def _still_admin(res: Resources, org_id: UUID, user_id: UUID) -> bool:
    """A webhook's action runs as the admin who set it, only while they are one: a removed
    admin's webhook went on starting sessions owned by them."""
    async with tenant_transaction(res.engine, LOOKUP) as db:
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


async def _find(res: Resources, ctx: TenantContext, webhook_id: UUID) -> Webhook:
    async with tenant_transaction(res.engine, ctx) as db:
        row = await db.get(Webhook, webhook_id)
    if row is None or row.org_id != ctx.org_id:
        raise NotFoundException("webhook not found")
    return row


@post(
    "/api/v1/webhooks/{webhook_id:uuid}/deliveries",
    tags=["webhooks"],
    status_code=202,
    request_max_body_size=MAX_INBOUND_BYTES,
    exclude_from_auth=True,
    security=[],
)
async def receive_delivery(webhook_id: UUID, request: Request[Any, Any, State], state: State) -> Accepted:
    """A signed callback (no JWT), Standard Webhooks: `webhook-signature` is HMAC-SHA256 over
    `<webhook-id>.<webhook-timestamp>.<body>`, the timestamp within 5 minutes, and each signed
    `webhook-id` accepted once in 24 hours."""
    res = resources(state)
    async with tenant_transaction(res.engine, LOOKUP) as db:
        row = await db.get(Webhook, webhook_id)
    if row is None or row.direction != "inbound" or not row.enabled:
        raise NotFoundException("webhook not found")
    # From here every answer (too large, bad signature, replay, accepted) is in the org's trail.
    audit_under(request.scope, row.org_id)
    body = await request.body()
    secret = _open_secret(res, row)
    problem = verify(secret, request.headers, body)
    if problem:
        raise NotAuthorizedException(problem)
    # Signed together with the body, so a replay under a fresh id fails the signature above.
    delivery_id = request.headers[ID_HEADER]
    run_as = UUID(row.action["run_as_user_id"])
    if not await _still_admin(res, row.org_id, run_as):
        raise ClientException(
            "this webhook's action runs as a user who is no longer an admin of the organization;"
            " an admin must set its action again",
            status_code=409,
        )
    try:
        document: Any = json.loads(body) if body else None
    except ValueError:
        document = body.decode(errors="replace")
    seen = res.names.webhook_delivery_seen(webhook_id, delivery_id)
    if not await res.redis.set(seen, "1", nx=True, ex=DEDUP_SECONDS):
        raise ClientException(f"delivery {delivery_id!r} was already received", status_code=409)
    event = Event(
        type=EventType.WEBHOOK_RECEIVED,
        org_id=row.org_id,
        user_id=run_as,
        session_id=UUID(row.action["session_id"]) if row.action.get("session_id") else None,
        correlation_id=current_correlation_id(),
        payload={"webhook_id": str(row.id), "delivery_id": delivery_id, "body": document},
    )
    try:
        await publish(res.redis, res.names, event)
    except Exception:
        # Not published: let the sender's retry of the same delivery id through.
        await res.redis.delete(seen)
        raise
    return Accepted(event_id=event.id)
