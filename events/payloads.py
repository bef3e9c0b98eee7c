"""The typed payloads that travel on the streams: one model per kind, one place that builds and parses it.

Two shapes travel:

- A session's input stream carries flat string fields per entry (``type`` plus that type's fields),
  read by the session's host: ``input_fields`` writes one, ``parse_input`` reads one.
- Work streams carry an ``Event`` envelope whose ``payload`` is a JSON object: each model's
  ``payload()`` builds it and ``of(event)`` reads it.

The field names and values are exactly what earlier versions wrote, so a worker mid-upgrade reads
entries still waiting in Redis (tests/test_payloads.py holds literal old entries).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from events.envelope import Event


class _Input(BaseModel):
    # Unknown fields are ignored, so an entry written by a newer ingress still reads.
    model_config = ConfigDict(extra="ignore", frozen=True)


class UserMessage(_Input):
    """A message for the agent; the host types it once the agent is stable."""

    type: Literal["user"] = "user"
    content: str


class RawKeys(_Input):
    """Keystrokes typed into the agent's terminal as they are."""

    type: Literal["raw"] = "raw"
    content: str


class Interrupt(_Input):
    type: Literal["interrupt"] = "interrupt"
    content: str = ""


class Stop(_Input):
    type: Literal["stop"] = "stop"
    content: str = ""


class Upload(_Input):
    """A file the ingress stored under ``key`` (base64), to be placed in the workspace as ``name``."""

    type: Literal["upload"] = "upload"
    key: str
    name: str


class PermissionChoice(_Input):
    """An answer to an ACP agent's permission request."""

    type: Literal["permission"] = "permission"
    request_id: str
    option_id: str
    actor: str = ""


SessionInput = Annotated[
    UserMessage | RawKeys | Interrupt | Stop | Upload | PermissionChoice, Field(discriminator="type")
]
_SESSION_INPUT: TypeAdapter[SessionInput] = TypeAdapter(SessionInput)


def input_fields(item: SessionInput) -> dict[str, str]:
    """The stream entry's fields (Redis stores strings only)."""
    return {key: str(value) for key, value in item.model_dump().items()}


def parse_input(fields: Mapping[str, str]) -> SessionInput:
    """An input stream entry; raises ``pydantic.ValidationError`` for one no writer makes."""
    return _SESSION_INPUT.validate_python(dict(fields))


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def payload(self) -> dict[str, Any]:
        """The envelope's ``payload`` (JSON values)."""
        return self.model_dump(mode="json")

    @classmethod
    def of(cls, event: Event) -> Self:
        return cls.model_validate(event.payload)


class SessionRequest(_Payload):
    """``session.requested``: host a new session of ``agent_type``."""

    agent_type: str = "custom"
    # The first message, typed once the agent has settled.
    prompt: str | None = None
    # For ``custom``: which of the deployment's AGENTAPI_CUSTOM_AGENTS commands to run.
    custom_agent: str | None = None
    # The org's and user's prompts composed for this agent type.
    system_prompt: Annotated[str, BeforeValidator(lambda value: value or "")] = ""


class McpWork(_Payload):
    """Work for the tools pool on one MCP configuration; ``mcp.test_requested`` carries just this
    (connect and list the tools)."""

    # Kept as text: a configuration id that is no UUID is answered ``not_found`` by the tools pool.
    config_id: str
    # The configuration's version (its updated_at) as the requester listed it: a tools worker
    # reuses what it loaded for that version; none means load afresh.
    version: str | None = None
    # Whether the requester waits on a reply stream for the outcome.
    reply: bool = False


class ToolCall(McpWork):
    """``tool_call.requested``: call ``tool`` of one MCP configuration."""

    tool: str
    arguments: Annotated[dict[str, Any], BeforeValidator(lambda value: value or {})] = Field(
        default_factory=dict
    )
    # Seconds; none means the deployment's MCP_CALL_TIMEOUT_SECONDS.
    timeout: float | None = None
    source: Literal["api", "gateway"] = "api"


class OAuthRefresh(_Payload):
    """``mcp.oauth_refresh_requested``: refresh one MCP OAuth grant shortly before its token expires."""

    grant_id: str
    config_id: str
    # The grant row's ``updated_at`` when the job was scheduled: a grant refreshed since has moved on.
    version: str
    # ISO time the dispatcher holds the job back until (on Dramatiq's delay queue).
    not_before: str | None = None


OUTCOMES = frozenset({"success", "failure", "denied", "error"})


def _outcome(value: object) -> str:
    return value if isinstance(value, str) and value in OUTCOMES else "error"


def clip(value: object, limit: int) -> str | None:
    """Text cut to a column's size; empty or missing becomes None."""
    return str(value)[:limit] if value else None


def _clipped(limit: int) -> BeforeValidator:
    return BeforeValidator(lambda value: clip(value, limit))


# The audit record's columns (events.audit writes records without the model too).
RESOURCE_ID_CHARS = 128
IP_CHARS = 64
USER_AGENT_CHARS = 512


class AuditRecord(_Payload):
    """``audit.recorded``: who did what to which resource, with what outcome.

    Parsing is lenient on purpose: the audit trail stores whatever a producer reported, cut to the
    columns' sizes, rather than lose the record (an unknown outcome is stored as ``error``).
    """

    action: Annotated[str, BeforeValidator(lambda value: str(value or "unknown")[:100])] = "unknown"
    outcome: Annotated[str, BeforeValidator(_outcome)] = "error"
    resource_type: Annotated[str | None, _clipped(64)] = None
    resource_id: Annotated[str | None, _clipped(RESOURCE_ID_CHARS)] = None
    details: Annotated[
        dict[str, Any], BeforeValidator(lambda value: value if isinstance(value, dict) else {})
    ] = Field(default_factory=dict)
    ip: Annotated[str | None, _clipped(IP_CHARS)] = None
    user_agent: Annotated[str | None, _clipped(USER_AGENT_CHARS)] = None


class WebhookReceived(_Payload):
    """``webhook.received``: an inbound delivery whose action the ``default`` pool carries out."""

    webhook_id: str
    delivery_id: str
    # The delivery's body: parsed JSON, or the text when it was not JSON.
    body: Any = None


class WebhookNotice(_Payload):
    """``webhook.notify_requested`` for a result: fan ``event`` out to the org's subscriptions."""

    # The result's own envelope, as sent on the wire.
    event: str
    # Its position in the session's event log, so sinks publish in log order; empty if unknown.
    stream_id: str | None = None

    def source(self) -> Event:
        return Event.from_wire(self.event)


class WebhookRedelivery(_Payload):
    """``webhook.notify_requested`` for an admin's redelivery of one failed delivery."""

    delivery_id: str


def webhook_notify(event: Event) -> WebhookNotice | WebhookRedelivery:
    """Which of the two ``webhook.notify_requested`` payloads ``event`` carries."""
    if "delivery_id" in event.payload:
        return WebhookRedelivery.of(event)
    return WebhookNotice.of(event)
