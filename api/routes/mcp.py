"""MCP configurations (org- and user-scoped), connection tests, and direct tool calls.

The ingress validates and stores; connecting to an MCP server is always a ``tools`` worker's job.
A bearer token is sealed on save and never returned.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, cast
from uuid import UUID, uuid4

from litestar import Controller, Request, delete, get, post, put
from litestar.datastructures import State
from litestar.exceptions import (
    ClientException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Response
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, or_, select

from api.auth import Principal
from api.correlation import current_correlation_id
from api.pagination import decode_cursor, encode_cursor
from api.problems import StrictBody
from api.routes.sessions import find_session
from api.state import Resources, resources
from api.tenancy import tenant_context
from events.envelope import Event, EventType
from events.publisher import publish
from events.results import await_reply
from schemas.crypto import KeyRingError, SecretRef
from schemas.db import TenantContext, tenant_transaction
from schemas.roles import ADMIN_ROLES
from schemas.tables import McpConfiguration, McpOAuthToken, utcnow
from services.egress import EgressRefused, check_endpoint, check_stdio
from services.mcp.oauth_grants import revoke_grants

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# How long a request waits for a worker's answer before it returns 202 and the event id.
DEFAULT_WAIT_SECONDS = 30.0


Connection = Literal["connected", "needs_reauth", "not_connected"]


class OAuthSettingsIn(StrictBody):
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="a client registered beforehand; else registered dynamically",
    )
    client_secret: str | None = Field(
        None, min_length=1, max_length=4096, description="the configured client's secret; write-only"
    )
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] | None = None
    scopes: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=64
    )
    authorization_server: str | None = Field(
        None, max_length=2048, description="issuer URL, for servers that publish no RFC 9728 metadata"
    )


class ConfigIn(StrictBody):
    name: str = Field(
        min_length=1, max_length=64, description="letters, digits, '-' and '_'; unique per scope"
    )
    scope: Literal["organization", "user"] = "user"
    transport: Literal["stdio", "http", "sse"]
    endpoint_url: str | None = Field(None, max_length=2048)
    command: str | None = Field(None, max_length=512)
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    env: dict[str, Annotated[str, Field(max_length=4096)]] = Field(default_factory=dict, max_length=64)
    auth_type: Literal["none", "bearer", "oauth"] = "none"
    bearer_token: str | None = Field(
        None, min_length=1, max_length=8192, description="for auth_type bearer; write-only"
    )
    oauth: OAuthSettingsIn = Field(
        default_factory=OAuthSettingsIn, description="client settings for auth_type oauth"
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> ConfigIn:
        if not NAME.match(self.name):
            raise ValueError("name must start with a letter and hold only letters, digits, '-' and '_'")
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("command is required for transport stdio")
            if self.endpoint_url:
                raise ValueError("endpoint_url is for http and sse transports, not stdio")
            if self.auth_type != "none":
                raise ValueError("stdio servers take no auth_type; pass credentials in env")
        else:
            if not self.endpoint_url:
                raise ValueError(f"endpoint_url is required for transport {self.transport}")
            if self.command or self.args:
                raise ValueError("command and args are for stdio servers only")
        if self.bearer_token is not None and self.auth_type != "bearer":
            raise ValueError("bearer_token is only accepted with auth_type bearer")
        if self.oauth.client_secret is not None and (self.auth_type != "oauth" or not self.oauth.client_id):
            raise ValueError(
                "oauth.client_secret is only accepted with auth_type oauth and an oauth.client_id"
            )
        return self

    @property
    def secret(self) -> str | None:
        """The write-only secret to seal: a bearer token or an OAuth client's secret."""
        return self.bearer_token if self.auth_type == "bearer" else self.oauth.client_secret

    def stored_oauth(self) -> dict[str, Any]:
        return self.oauth.model_dump(exclude={"client_secret"}, exclude_none=True, exclude_defaults=True)


class ConfigOut(BaseModel):
    id: UUID
    org_id: UUID
    user_id: UUID | None
    scope: str
    name: str
    transport: str
    endpoint_url: str | None
    command: str | None
    args: list[str]
    env_keys: list[str] = Field(description="names of the variables set; values are not returned")
    auth_type: str
    has_secret: bool
    connection: Connection | None = Field(
        None, description="auth_type oauth: the caller's connection to the server"
    )
    enabled: bool
    created_at: datetime
    updated_at: datetime


class ConfigPage(BaseModel):
    configurations: list[ConfigOut]
    next_cursor: str | None


class TestRequest(StrictBody):
    config_id: UUID
    wait_seconds: float = Field(DEFAULT_WAIT_SECONDS, ge=0, le=120, description="0: answer 202 at once")


class ToolCallRequest(StrictBody):
    config_id: UUID
    tool: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float | None = Field(None, gt=0, le=3600)
    wait_seconds: float = Field(DEFAULT_WAIT_SECONDS, ge=0, le=300, description="0: answer 202 at once")


class WorkAnswer(BaseModel):
    event_id: str
    status: Literal["completed", "pending"]
    result: dict[str, Any] | None = None


def config_out(row: McpConfiguration, grants: dict[UUID, str] | None = None) -> ConfigOut:
    return ConfigOut(
        id=row.id,
        org_id=row.org_id,
        user_id=row.user_id,
        scope=row.scope,
        name=row.name,
        transport=row.transport,
        endpoint_url=row.endpoint_url,
        command=row.command,
        args=list(row.args),
        env_keys=sorted(row.env),
        auth_type=row.auth_type,
        has_secret=row.encrypted_secret is not None,
        connection=cast(Connection, (grants or {}).get(row.id, "not_connected"))
        if row.auth_type == "oauth"
        else None,
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def effective(query: Any, ctx: TenantContext) -> Any:
    """The org's configurations and the caller's own (RLS enforces the same underneath)."""
    return query.where(
        McpConfiguration.org_id == ctx.org_id,
        or_(col(McpConfiguration.user_id).is_(None), McpConfiguration.user_id == ctx.user_id),
    )


async def connections(db: Any, ctx: TenantContext, config_ids: list[UUID]) -> dict[UUID, str]:
    """The caller's OAuth connection state per configuration (never the tokens)."""
    if not config_ids:
        return {}
    rows = await db.exec(
        select(McpOAuthToken.configuration_id, McpOAuthToken.status).where(
            McpOAuthToken.user_id == ctx.user_id, col(McpOAuthToken.configuration_id).in_(config_ids)
        )
    )
    return {config_id: status for config_id, status in rows}


async def _validate(data: ConfigIn, res: Resources) -> None:
    try:
        if data.transport == "stdio":
            assert data.command is not None
            check_stdio(data.command, data.args, data.env, res.settings)
        else:
            assert data.endpoint_url is not None
            await check_endpoint(data.endpoint_url, res.settings)
        if data.oauth.authorization_server:
            await check_endpoint(data.oauth.authorization_server, res.settings, "oauth.authorization_server")
    except EgressRefused as exc:
        raise ValidationException(str(exc), extra=[{"key": exc.field, "message": exc.reason}]) from exc
    if data.secret is not None:
        try:
            res.settings.key_ring()
        except KeyRingError as exc:
            raise ClientException(str(exc), status_code=503) from exc


def _seal(res: Resources, row: McpConfiguration, token: str) -> str:
    return res.settings.key_ring().encrypt(
        token, SecretRef("mcp_configurations", "encrypted_secret", row.id, row.org_id)
    )


def _after(cursor: str) -> tuple[str, UUID]:
    name, ident = decode_cursor(cursor, 2)
    try:
        return name, UUID(ident)
    except ValueError as exc:
        raise ValidationException("cursor is not one this API returned") from exc


async def find_config(res: Resources, ctx: TenantContext, config_id: UUID) -> McpConfiguration:
    async with tenant_transaction(res.engine, ctx) as db:
        row = (
            await db.exec(effective(select(McpConfiguration), ctx).where(McpConfiguration.id == config_id))
        ).first()
    if row is None:
        raise NotFoundException("no such MCP configuration")
    return row


def _may_change(ctx: TenantContext, row: McpConfiguration) -> None:
    if row.scope == "organization" and ctx.role not in ADMIN_ROLES:
        raise PermissionDeniedException("only organization admins change organization MCP configurations")


async def request_work(res: Resources, event: Event, wait_seconds: float) -> Response[WorkAnswer]:
    """Publish work for the tools pool; wait (bounded) for its answer, else 202 with the event id."""
    await publish(res.redis, res.names, event)
    answer = await await_reply(res.redis, res.names, event.id, wait_seconds) if wait_seconds > 0 else None
    if answer is None:
        return Response(WorkAnswer(event_id=event.id, status="pending"), status_code=202)
    return Response(WorkAnswer(event_id=event.id, status="completed", result=answer.payload), status_code=200)


class McpConfigurationController(Controller):
    path = "/api/v1/mcp/configurations"
    tags = ("mcp",)

    @post("/", status_code=201)
    async def create(
        self, data: ConfigIn, request: Request[Principal, str, State], state: State
    ) -> ConfigOut:
        """Add an MCP server for the organization (admins) or for yourself."""
        res = resources(state)
        ctx = tenant_context(request.user)
        if data.scope == "organization" and ctx.role not in ADMIN_ROLES:
            raise PermissionDeniedException("only organization admins add organization MCP configurations")
        await _validate(data, res)
        row = McpConfiguration(
            id=uuid4(),
            org_id=ctx.org_id,
            user_id=ctx.user_id if data.scope == "user" else None,
            scope=data.scope,
            name=data.name,
            transport=data.transport,
            auth_type=data.auth_type,
            endpoint_url=data.endpoint_url,
            command=data.command,
            args=data.args,
            env=data.env,
            oauth=data.stored_oauth(),
            enabled=data.enabled,
        )
        if data.secret is not None:
            row.encrypted_secret = _seal(res, row, data.secret)
        try:
            async with tenant_transaction(res.engine, ctx) as db:
                db.add(row)
        except IntegrityError as exc:
            raise ClientException(
                f"an MCP configuration named {data.name!r} already exists in this scope", status_code=409
            ) from exc
        return config_out(row)

    @get("/")
    async def list_configurations(
        self,
        request: Request[Principal, str, State],
        state: State,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=400)] = None,
    ) -> ConfigPage:
        """Your effective MCP servers: the organization's and your own, by name."""
        res = resources(state)
        ctx = tenant_context(request.user)
        query = effective(select(McpConfiguration), ctx)
        if cursor:
            name, ident = _after(cursor)
            query = query.where(
                (col(McpConfiguration.name) > name)
                | ((col(McpConfiguration.name) == name) & (col(McpConfiguration.id) > ident))
            )
        query = query.order_by(col(McpConfiguration.name), col(McpConfiguration.id)).limit(limit + 1)
        async with tenant_transaction(res.engine, ctx) as db:
            rows = list(await db.exec(query))
            page = rows[:limit]
            grants = await connections(db, ctx, [r.id for r in page if r.auth_type == "oauth"])
        return ConfigPage(
            configurations=[config_out(r, grants) for r in page],
            next_cursor=encode_cursor(page[-1].name, page[-1].id) if len(rows) > limit else None,
        )

    @get("/{config_id:uuid}")
    async def get_configuration(
        self, config_id: UUID, request: Request[Principal, str, State], state: State
    ) -> ConfigOut:
        res = resources(state)
        ctx = tenant_context(request.user)
        row = await find_config(res, ctx, config_id)
        async with tenant_transaction(res.engine, ctx) as db:
            return config_out(row, await connections(db, ctx, [row.id]))

    @put("/{config_id:uuid}")
    async def replace(
        self, config_id: UUID, data: ConfigIn, request: Request[Principal, str, State], state: State
    ) -> ConfigOut:
        """Replace a configuration. Omitting `bearer_token` keeps the stored one (with auth_type bearer)."""
        res = resources(state)
        ctx = tenant_context(request.user)
        row = await find_config(res, ctx, config_id)
        _may_change(ctx, row)
        if data.scope != row.scope:
            raise ValidationException(
                "scope cannot change; create a new configuration instead",
                extra=[{"key": "scope", "message": f"is {row.scope}"}],
            )
        await _validate(data, res)
        if (
            data.auth_type == "bearer"
            and data.bearer_token is None
            and (row.encrypted_secret is None or row.auth_type != "bearer")
        ):
            raise ValidationException(
                "bearer_token is required",
                extra=[{"key": "bearer_token", "message": "required for auth_type bearer"}],
            )
        if data.auth_type == "bearer" and data.bearer_token is None and data.endpoint_url != row.endpoint_url:
            # The stored token was given for the old host; keeping it would send it to the new one.
            raise ValidationException(
                "bearer_token is required when endpoint_url changes: the stored token is not sent elsewhere",
                extra=[{"key": "bearer_token", "message": "required when endpoint_url changes"}],
            )
        previous_auth = row.auth_type
        for name in (
            "name",
            "transport",
            "endpoint_url",
            "command",
            "args",
            "env",
            "auth_type",
            "enabled",
        ):
            setattr(row, name, getattr(data, name))
        row.oauth = data.stored_oauth()
        if data.secret is not None:
            row.encrypted_secret = _seal(res, row, data.secret)
        elif (
            data.auth_type != previous_auth
            or data.auth_type == "none"
            or (data.auth_type == "oauth" and not data.oauth.client_id)
        ):
            row.encrypted_secret = None
        row.updated_at = utcnow()
        try:
            async with tenant_transaction(res.engine, ctx) as db:
                await db.merge(row)
        except IntegrityError as exc:
            raise ClientException(
                f"an MCP configuration named {data.name!r} already exists in this scope", status_code=409
            ) from exc
        await res.redis.delete(res.names.mcp_tools(row.id))
        return config_out(row)

    @delete("/{config_id:uuid}", status_code=204)
    async def remove(self, config_id: UUID, request: Request[Principal, str, State], state: State) -> None:
        """Delete a configuration with its stored secret and tokens; OAuth grants (everyone's, for an
        organization's server) are revoked at the authorization server first."""
        res = resources(state)
        ctx = tenant_context(request.user)
        row = await find_config(res, ctx, config_id)
        _may_change(ctx, row)
        async with tenant_transaction(res.engine, ctx) as db:
            grants = list(
                await db.exec(select(McpOAuthToken).where(McpOAuthToken.configuration_id == row.id))
            )
        if grants:
            try:
                ring = res.settings.key_ring()
            except KeyRingError as exc:
                raise ClientException(str(exc), status_code=503) from exc
            await revoke_grants(ring, grants, res.settings)
        async with tenant_transaction(res.engine, ctx) as db:
            stored = await db.get(McpConfiguration, row.id)
            if stored is not None:
                await db.delete(stored)
        await res.redis.delete(res.names.mcp_tools(row.id), res.names.breaker(row.id))


# Both answers are documented: the result when it came within `wait_seconds`, else the event id.
WORK_RESPONSES = {
    202: ResponseSpec(data_container=WorkAnswer, description="still running: follow the event id"),
}


@post("/api/v1/mcp/test", tags=["mcp"], status_code=200, responses=WORK_RESPONSES)
async def test_configuration(
    data: TestRequest, request: Request[Principal, str, State], state: State
) -> Response[WorkAnswer]:
    """Connect to the server and list its tools, through a tools worker. Waits up to
    `wait_seconds` for the answer (200), else answers 202 with the event id."""
    res = resources(state)
    ctx = tenant_context(request.user)
    row = await find_config(res, ctx, data.config_id)
    event = Event(
        type=EventType.MCP_TEST_REQUESTED,
        org_id=row.org_id,
        user_id=ctx.user_id,
        correlation_id=current_correlation_id(),
        payload={"config_id": str(row.id), "reply": True},
    )
    return await request_work(res, event, data.wait_seconds)


@post(
    "/api/v1/sessions/{session_id:uuid}/tool-calls", tags=["mcp"], status_code=200, responses=WORK_RESPONSES
)
async def call_tool(
    session_id: UUID, data: ToolCallRequest, request: Request[Principal, str, State], state: State
) -> Response[WorkAnswer]:
    """Call one of the session's MCP tools directly (from the frontend). Progress and the outcome
    also arrive on the session's events as `tool_call`."""
    res = resources(state)
    ctx = tenant_context(request.user)
    session = await find_session(state, request.user, session_id)
    if session.user_id != ctx.user_id:
        raise PermissionDeniedException("only the session's owner calls tools in it")
    row = await find_config(res, ctx, data.config_id)
    event = Event(
        type=EventType.TOOL_CALL_REQUESTED,
        org_id=row.org_id,
        user_id=ctx.user_id,
        session_id=session_id,
        correlation_id=current_correlation_id(),
        payload={
            "config_id": str(row.id),
            "tool": data.tool,
            "arguments": data.arguments,
            "timeout": data.timeout_seconds,
            "source": "api",
            "reply": True,
        },
    )
    return await request_work(res, event, data.wait_seconds)
