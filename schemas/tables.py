"""SQLModel tables: every entity of the platform. Tenant tables carry ``org_id`` (RLS keys on it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from schemas.roles import ORG_ROLES

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timestamps with their zone on every database: SQLite hands back naive values, read as UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _ts(nullable: bool = False) -> Any:
    return Field(
        default_factory=None if nullable else utcnow,
        sa_type=UTCDateTime,
        nullable=nullable,
    )


def _json(default: Any = dict) -> Any:
    return Field(default_factory=default, sa_type=JSON_TYPE, nullable=False)


def _org_fk() -> Any:
    return Field(foreign_key="organizations.id", ondelete="CASCADE", index=True, nullable=False)


def _check_in(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_allowed")


WEBHOOK_DIRECTIONS = ("inbound", "outbound", "sink")
EVENT_FORMATS = ("native", "cloudevents")
SESSION_STATUSES = ("requested", "starting", "running", "stable", "ended", "failed")
PROMPT_SCOPES = ("global", "organization", "user")
MCP_TRANSPORTS = ("stdio", "http", "sse")
MCP_AUTH_TYPES = ("none", "bearer", "oauth")
CONFIG_SCOPES = ("organization", "user")


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    name: str = Field(max_length=200)
    slug: str = Field(max_length=100, unique=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class User(SQLModel, table=True):
    """Users are global (one person may belong to several orgs); ``id`` is the JWT ``sub``."""

    __tablename__ = "users"
    id: UUID = Field(primary_key=True)
    email: str | None = Field(default=None, max_length=320)
    display_name: str | None = Field(default=None, max_length=200)
    is_superadmin: bool = False
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Membership(SQLModel, table=True):
    __tablename__ = "memberships"
    __table_args__ = (sa.UniqueConstraint("org_id", "user_id"), _check_in("role", ORG_ROLES))
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    org_id: UUID = _org_fk()
    user_id: UUID = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    role: str = Field(default="member", max_length=16)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    # Set when the member is removed; the row stays so their token cannot provision them again.
    removed_at: datetime | None = _ts(nullable=True)


class UserSession(SQLModel, table=True):
    __tablename__ = "user_sessions"
    __table_args__ = (
        _check_in("status", SESSION_STATUSES),
        sa.Index("ix_user_sessions_org_user_status", "org_id", "user_id", "status"),
    )
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    org_id: UUID = _org_fk()
    user_id: UUID = Field(foreign_key="users.id", ondelete="CASCADE")
    agent_type: str = Field(max_length=32)
    status: str = Field(default="requested", max_length=16)
    end_reason: str | None = Field(default=None, max_length=1024)
    title: str | None = Field(default=None, max_length=200)
    workspace_path: str | None = Field(default=None, max_length=1024)
    # The input stream's cursor: every input up to last_input_id is done (a user message's reply is
    # stored); pending_input_id is the user message whose turn is stored as far as it got.
    last_input_id: str | None = Field(default=None, max_length=64)
    pending_input_id: str | None = Field(default=None, max_length=64)
    metadata_: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column("metadata", JSON_TYPE, nullable=False)
    )
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    started_at: datetime | None = _ts(nullable=True)
    ended_at: datetime | None = _ts(nullable=True)


class SessionMessage(SQLModel, table=True):
    __tablename__ = "session_messages"
    __table_args__ = (sa.UniqueConstraint("session_id", "seq"), _check_in("role", ("user", "agent")))
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    session_id: UUID = Field(foreign_key="user_sessions.id", ondelete="CASCADE", index=True)
    org_id: UUID = _org_fk()
    user_id: UUID = Field(foreign_key="users.id", ondelete="CASCADE")
    seq: int
    role: str = Field(max_length=8)
    content: str = Field(sa_type=sa.Text)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class SessionWorkspace(SQLModel, table=True):
    __tablename__ = "session_workspaces"
    session_id: UUID = Field(foreign_key="user_sessions.id", ondelete="CASCADE", primary_key=True)
    org_id: UUID = _org_fk()
    user_id: UUID = Field(foreign_key="users.id", ondelete="CASCADE")
    path: str = Field(max_length=1024)
    bytes_used: int = Field(default=0, sa_type=BIGINT)
    quota_bytes: int | None = Field(default=None, sa_type=BIGINT)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class McpConfiguration(SQLModel, table=True):
    __tablename__ = "mcp_configurations"
    __table_args__ = (
        _check_in("transport", MCP_TRANSPORTS),
        _check_in("auth_type", MCP_AUTH_TYPES),
        _check_in("scope", CONFIG_SCOPES),
        sa.CheckConstraint(
            "(scope = 'organization' AND user_id IS NULL) OR (scope = 'user' AND user_id IS NOT NULL)",
            name="scope_owner",
        ),
        sa.CheckConstraint(
            "(transport = 'stdio' AND command IS NOT NULL) OR (transport <> 'stdio' AND endpoint_url IS NOT NULL)",
            name="transport_target",
        ),
        # One name per scope: per org for org configs, per user for user configs.
        sa.Index(
            "uq_mcp_configurations_org_name",
            "org_id",
            "name",
            unique=True,
            postgresql_where=sa.text("user_id IS NULL"),
            sqlite_where=sa.text("user_id IS NULL"),
        ),
        sa.Index(
            "uq_mcp_configurations_user_name",
            "org_id",
            "user_id",
            "name",
            unique=True,
            postgresql_where=sa.text("user_id IS NOT NULL"),
            sqlite_where=sa.text("user_id IS NOT NULL"),
        ),
    )
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    org_id: UUID = _org_fk()
    user_id: UUID | None = Field(default=None, foreign_key="users.id", ondelete="CASCADE")
    scope: str = Field(max_length=16)
    name: str = Field(max_length=100)
    transport: str = Field(max_length=8)
    auth_type: str = Field(default="none", max_length=8)
    endpoint_url: str | None = Field(default=None, max_length=2048)
    command: str | None = Field(default=None, max_length=512)
    args: list[str] = _json(list)
    env: dict[str, str] = _json()
    encrypted_secret: str | None = Field(default=None, sa_type=sa.Text)
    oauth: dict[str, Any] = _json()
    enabled: bool = True
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class McpOAuthToken(SQLModel, table=True):
    __tablename__ = "mcp_oauth_tokens"
    __table_args__ = (
        sa.UniqueConstraint("configuration_id", "user_id"),
        _check_in("status", ("connected", "needs_reauth")),
    )
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    org_id: UUID = _org_fk()
    user_id: UUID = Field(foreign_key="users.id", ondelete="CASCADE")
    configuration_id: UUID = Field(foreign_key="mcp_configurations.id", ondelete="CASCADE")
    encrypted_access_token: str = Field(sa_type=sa.Text)
    encrypted_refresh_token: str | None = Field(default=None, sa_type=sa.Text)
    expires_at: datetime | None = _ts(nullable=True)
    scopes: str | None = Field(default=None, max_length=2048)
    status: str = Field(default="connected", max_length=16)
    # The client and authorization-server endpoints the grant was issued to (no secrets).
    client: dict[str, Any] = _json()
    encrypted_client_secret: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class SystemPrompt(SQLModel, table=True):
    __tablename__ = "system_prompts"
    __table_args__ = (
        _check_in("scope", PROMPT_SCOPES),
        sa.CheckConstraint(
            "(scope = 'global' AND org_id IS NULL AND user_id IS NULL)"
            " OR (scope = 'organization' AND org_id IS NOT NULL AND user_id IS NULL)"
            " OR (scope = 'user' AND org_id IS NOT NULL AND user_id IS NOT NULL)",
            name="scope_owner",
        ),
        sa.Index(
            "uq_system_prompts_global_name",
            "name",
            unique=True,
            postgresql_where=sa.text("scope = 'global'"),
            sqlite_where=sa.text("scope = 'global'"),
        ),
        sa.Index(
            "uq_system_prompts_org_name",
            "org_id",
            "name",
            unique=True,
            postgresql_where=sa.text("scope = 'organization'"),
            sqlite_where=sa.text("scope = 'organization'"),
        ),
        sa.Index(
            "uq_system_prompts_user_name",
            "org_id",
            "user_id",
            "name",
            unique=True,
            postgresql_where=sa.text("scope = 'user'"),
            sqlite_where=sa.text("scope = 'user'"),
        ),
    )
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    org_id: UUID | None = Field(default=None, foreign_key="organizations.id", ondelete="CASCADE", index=True)
    user_id: UUID | None = Field(default=None, foreign_key="users.id", ondelete="CASCADE")
    scope: str = Field(max_length=16)
    name: str = Field(max_length=100)
    content: str = Field(sa_type=sa.Text)
    priority: int = 0
    is_template: bool = False
    enabled: bool = True
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class TenantSettings(SQLModel, table=True):
    __tablename__ = "tenant_settings"
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    org_id: UUID = Field(foreign_key="organizations.id", ondelete="CASCADE", unique=True)
    settings: dict[str, Any] = _json()
    encrypted_secrets: str | None = Field(default=None, sa_type=sa.Text)
    retention_days: int | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Webhook(SQLModel, table=True):
    __tablename__ = "webhooks"
    __table_args__ = (
        _check_in("direction", WEBHOOK_DIRECTIONS),
        _check_in("format", EVENT_FORMATS),
        _check_in("health", ("ok", "failing")),
        sa.UniqueConstraint("org_id", "name"),
    )
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    org_id: UUID = _org_fk()
    name: str = Field(max_length=100)
    direction: str = Field(max_length=8)
    # Inbound/outbound: the signing secret. Sink: the broker URL, credentials included.
    encrypted_secret: str = Field(sa_type=sa.Text)
    action: dict[str, Any] = _json()
    target_url: str | None = Field(default=None, max_length=2048)
    event_types: list[str] = _json(list)
    enabled: bool = True
    # How outbound bodies are shaped (sinks always publish CloudEvents).
    format: str = Field(default="native", max_length=16)
    # Sinks: the exchange ("" = the broker's default exchange, routing straight to a queue), the
    # routing-key template, and where delivery stands (the broker's last error while failing).
    exchange: str | None = Field(default=None, max_length=255)
    routing_key: str | None = Field(default=None, max_length=255)
    health: str = Field(default="ok", max_length=8)
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class WebhookDelivery(SQLModel, table=True):
    """One outbound notification to one subscription: its attempts, and where it ended."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("webhook_id", "event_id"),
        _check_in("status", ("pending", "succeeded", "failed")),
    )
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    org_id: UUID = _org_fk()
    webhook_id: UUID = Field(foreign_key="webhooks.id", ondelete="CASCADE", index=True)
    event_id: str = Field(max_length=64)
    event_type: str = Field(max_length=64)
    # Sinks publish a session's events in the order of its event log: this is the entry's stream id,
    # zero-padded so it sorts as text ("" for events outside a session log).
    session_id: UUID | None = Field(default=None, index=True)
    position: str = Field(default="", max_length=40)
    payload: dict[str, Any] = _json()
    status: str = Field(default="pending", max_length=16, index=True)
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    delivered_at: datetime | None = _ts(nullable=True)


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_logs"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "seq"),
        _check_in("outcome", ("success", "failure", "denied", "error")),
    )
    id: UUID = Field(default_factory=uuid4, primary_key=True)
    org_id: UUID = _org_fk()
    seq: int = Field(sa_type=BIGINT)
    event_id: str = Field(max_length=64, unique=True)
    ts: datetime = _ts()
    actor_user_id: UUID | None = None
    action: str = Field(max_length=100)
    resource_type: str | None = Field(default=None, max_length=64)
    resource_id: str | None = Field(default=None, max_length=128)
    outcome: str = Field(max_length=16)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)
    correlation_id: str | None = Field(default=None, max_length=128)
    details: dict[str, Any] = _json()
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str = Field(max_length=64)


# Tables whose rows belong to one organization, and how RLS scopes them within it.
TENANT_TABLES = {
    "organizations": "org",
    "memberships": "org",
    "user_sessions": "user",
    "session_messages": "user",
    "session_workspaces": "user",
    "mcp_configurations": "user_optional",
    "mcp_oauth_tokens": "user",
    "system_prompts": "prompt",
    "tenant_settings": "org",
    "webhooks": "org",
    "webhook_deliveries": "org",
    "audit_logs": "org",
    "users": "users",
}
