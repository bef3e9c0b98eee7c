"""Webhooks: inbound endpoints external systems sign their callbacks for, outbound subscriptions to
session events, and event sinks (the same subscriptions published to the organization's own message
bus, in CloudEvents form). Admins manage them; inbound deliveries are public but signed
(schemas.webhook_signing).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import (
    ValidationException,
)
from litestar.params import Parameter
from pydantic import BaseModel, Field, model_validator

from api.audit_trail import audit_under
from api.auth import Principal
from api.problems import StrictBody
from api.state import resources
from api.tenancy import tenant_context
from events.envelope import NOTIFIED_TYPES
from events.sinks import (
    check_exchange,
    check_routing_key,
)
from schemas.db import MemberContext
from schemas.tables import Webhook
from services import webhooks as service
from services.agents import canonical_agent_type
from services.context import current_correlation_id
from services.webhooks import FIELDS, WebhookSpec

MAX_INBOUND_BYTES = 256 * 1024


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


def _admin(principal: Principal) -> MemberContext:
    return service.admin_only(tenant_context(principal))


def _action(action: Action | None) -> dict[str, Any]:
    return action.model_dump(mode="json", exclude_none=True) if action else {}


class WebhookController(Controller):
    path = "/api/v1/webhooks"
    tags = ("webhooks",)

    @post("/", status_code=201)
    async def create_webhook(
        self, data: WebhookIn, request: Request[Principal, str, State], state: State
    ) -> WebhookCreated:
        """Create an inbound endpoint or an outbound subscription; the answer shows its secret, once."""
        spec = WebhookSpec(
            name=data.name,
            direction=data.direction,
            action=_action(data.action),
            target_url=data.target_url,
            event_types=data.event_types,
            format=data.format,
            broker_url=data.broker_url,
            exchange=data.exchange,
            routing_key=data.routing_key,
        )
        row, secret = await service.create_webhook(resources(state), _admin(request.user), spec)
        return WebhookCreated(**_out(row), secret=secret)

    @patch("/{webhook_id:uuid}")
    async def update_webhook(
        self, webhook_id: UUID, data: WebhookPatch, request: Request[Principal, str, State], state: State
    ) -> WebhookOut:
        """Change a webhook's name, enabled flag, action (inbound) or target and event types (outbound)."""
        changes = data.changes()
        if "action" in changes:
            changes["action"] = _action(data.action)
        row = await service.update_webhook(resources(state), _admin(request.user), webhook_id, changes)
        return WebhookOut(**_out(row))

    @post("/{webhook_id:uuid}/secret", status_code=201)
    async def rotate_secret(
        self, webhook_id: UUID, request: Request[Principal, str, State], state: State
    ) -> WebhookCreated:
        """Replace the webhook's secret at once (the old one stops working); the answer shows it, once."""
        row, secret = await service.rotate_secret(resources(state), _admin(request.user), webhook_id)
        return WebhookCreated(**_out(row), secret=secret)

    @post("/{webhook_id:uuid}/test", status_code=200)
    async def test_sink(
        self, webhook_id: UUID, request: Request[Principal, str, State], state: State
    ) -> SinkTestOut:
        """Publish a `dev.agentapi.webhook.test` CloudEvent to the sink now and report the broker's answer
        (within AGENTAPI_SINK_TIMEOUT_SECONDS); the sink's delivery state is left as it is."""
        ctx = _admin(request.user)
        test = await service.test_sink(resources(state), ctx, webhook_id, current_correlation_id())
        return SinkTestOut(
            ok=test.error is None,
            event_id=test.event_id,
            exchange=test.exchange,
            routing_key=test.routing_key,
            error=test.error,
            elapsed_ms=test.elapsed_ms,
        )

    @get("/")
    async def list_webhooks(self, request: Request[Principal, str, State], state: State) -> list[WebhookOut]:
        rows = await service.list_webhooks(resources(state), _admin(request.user))
        return [WebhookOut(**_out(r)) for r in rows]

    @get("/{webhook_id:uuid}")
    async def get_webhook(
        self, webhook_id: UUID, request: Request[Principal, str, State], state: State
    ) -> WebhookOut:
        return WebhookOut(
            **_out(await service.find_webhook(resources(state), _admin(request.user), webhook_id))
        )

    @delete("/{webhook_id:uuid}", status_code=204)
    async def delete_webhook(
        self, webhook_id: UUID, request: Request[Principal, str, State], state: State
    ) -> None:
        await service.delete_webhook(resources(state), _admin(request.user), webhook_id)

    @get("/deliveries")
    async def list_deliveries(
        self,
        request: Request[Principal, str, State],
        state: State,
        status: Annotated[Literal["pending", "succeeded", "failed"] | None, Parameter()] = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> list[DeliveryOut]:
        """The outbound delivery log, newest first; `status=failed` is the dead-letter view."""
        rows = await service.list_deliveries(resources(state), _admin(request.user), status, limit)
        return [DeliveryOut(**r.model_dump()) for r in rows]

    @post("/deliveries/{delivery_id:uuid}/redeliver", status_code=202)
    async def redeliver(
        self, delivery_id: UUID, request: Request[Principal, str, State], state: State
    ) -> Accepted:
        """Send a dead-lettered delivery again, with a fresh attempt budget."""
        ctx = _admin(request.user)
        return Accepted(
            event_id=await service.redeliver(resources(state), ctx, delivery_id, current_correlation_id())
        )


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
    row = await service.find_inbound(res, webhook_id)
    # From here every answer (too large, bad signature, replay, accepted) is in the org's trail.
    audit_under(request.scope, row.org_id)
    body = await request.body()
    return Accepted(
        event_id=await service.accept_delivery(res, row, request.headers, body, current_correlation_id())
    )
