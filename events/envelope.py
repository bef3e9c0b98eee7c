"""The versioned event envelope that travels on every stream."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from events.ids import new_ulid

ENVELOPE_VERSION = 1
MAX_CORRELATION_ID = 128


class EventType(StrEnum):
    SESSION_REQUESTED = "session.requested"
    SESSION_STARTED = "session.started"
    SESSION_STATUS = "session.status"
    SESSION_ENDED = "session.ended"
    SESSION_FAILED = "session.failed"
    SESSION_RECOVERED = "session.recovered"
    MESSAGE_UPDATED = "message.updated"
    MESSAGE_COMPLETED = "message.completed"
    TOOL_CALL_REQUESTED = "tool_call.requested"
    TOOL_CALL_PROGRESS = "tool_call.progress"
    TOOL_CALL_COMPLETED = "tool_call.completed"
    TOOL_CALL_FAILED = "tool_call.failed"
    # A tool call as an ACP agent reports it (its own tools and MCP tools alike), start and updates.
    AGENT_TOOL_CALL = "tool_call.agent"
    PLAN_UPDATED = "plan.updated"
    # What went wrong with the agent (coder/agentapi's agent_error): a failure its screen shows, or a
    # message it never took. {level, message, kind, time}.
    AGENT_ERROR = "agent.error"
    PERMISSION_REQUESTED = "permission.requested"
    PERMISSION_DECIDED = "permission.decided"
    MCP_TEST_REQUESTED = "mcp.test_requested"
    MCP_TEST_COMPLETED = "mcp.test_completed"
    MCP_OAUTH_REFRESH_REQUESTED = "mcp.oauth_refresh_requested"
    MCP_OAUTH_NEEDS_REAUTH = "mcp.oauth_needs_reauth"
    WEBHOOK_RECEIVED = "webhook.received"
    WEBHOOK_NOTIFY_REQUESTED = "webhook.notify_requested"
    # Published only to an event sink an admin is testing (POST /webhooks/{id}/test).
    WEBHOOK_TEST = "webhook.test"
    AUDIT_RECORDED = "audit.recorded"
    USER_ERASED = "user.erased"


# Results an organization may subscribe outbound webhooks to.
NOTIFIED_TYPES = frozenset(
    {
        EventType.SESSION_ENDED,
        EventType.SESSION_FAILED,
        EventType.MESSAGE_COMPLETED,
        EventType.TOOL_CALL_COMPLETED,
        EventType.TOOL_CALL_FAILED,
    }
)


def new_event_id() -> str:
    """A time-sortable id (ULID), so ids order like the events they name."""
    return new_ulid()


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """A UTC time as the JSON answers write it (``Z``, not ``+00:00``), so SSE and GET /messages agree."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=new_event_id, min_length=26, max_length=26)
    type: EventType
    v: int = ENVELOPE_VERSION
    ts: datetime = Field(default_factory=utcnow)
    org_id: UUID
    user_id: UUID | None
    session_id: UUID | None = None
    correlation_id: str = Field(default_factory=new_event_id, max_length=MAX_CORRELATION_ID)
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_wire(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_wire(cls, raw: str | bytes) -> Event:
        return cls.model_validate_json(raw)

    def follow_up(self, type: EventType, payload: dict[str, Any] | None = None) -> Event:
        """A new event caused by this one: same tenant, session and correlation id."""
        return Event(
            type=type,
            org_id=self.org_id,
            user_id=self.user_id,
            session_id=self.session_id,
            correlation_id=self.correlation_id,
            payload=payload or {},
        )
