"""MCP configurations (org- and user-scoped), connection tests, and direct tool calls.

The ingress validates and stores; connecting to an MCP server is always a ``tools`` worker's job.
A bearer token is sealed on save and never returned.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, cast
from uuid import UUID

from litestar import Controller, Request, delete, get, post, put
from litestar.datastructures import State
from litestar.exceptions import (
    PermissionDeniedException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Response
from pydantic import BaseModel, Field, model_validator

from api.auth import Principal
from api.pagination import decode_cursor, encode_cursor
from api.problems import StrictBody
from api.state import resources
from api.tenancy import tenant_context
from schemas.tables import McpConfiguration
from services.context import current_correlation_id
from services.mcp.configs import (
    ConfigSpec,
    create_config,
    get_config,
    list_configs,
    remove_config,
    replace_config,
)
from services.mcp.work import DirectCall, WorkOutcome, request_test, request_tool_call
from services.sessions.lookup import find_session

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

    def spec(self) -> ConfigSpec:
        return ConfigSpec(
            name=self.name,
            scope=self.scope,
            transport=self.transport,
            endpoint_url=self.endpoint_url,
            command=self.command,
            args=self.args,
            env=self.env,
            auth_type=self.auth_type,
            oauth=self.oauth.model_dump(exclude={"client_secret"}, exclude_none=True, exclude_defaults=True),
            enabled=self.enabled,
            secret=self.bearer_token if self.auth_type == "bearer" else self.oauth.client_secret,
        )


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


def _after(cursor: str) -> tuple[str, UUID]:
    name, ident = decode_cursor(cursor, 2)
    try:
        return name, UUID(ident)
    except ValueError as exc:
        raise ValidationException("cursor is not one this API returned") from exc


def _answer(outcome: WorkOutcome) -> Response[WorkAnswer]:
    """The worker's answer when it came in time, else 202 with the event id to follow."""
    if outcome.result is None:
        return Response(WorkAnswer(event_id=outcome.event_id, status="pending"), status_code=202)
    return Response(
        WorkAnswer(event_id=outcome.event_id, status="completed", result=outcome.result), status_code=200
    )


class McpConfigurationController(Controller):
    path = "/api/v1/mcp/configurations"
    tags = ("mcp",)

    @post("/", status_code=201)
    async def create(
        self, data: ConfigIn, request: Request[Principal, str, State], state: State
    ) -> ConfigOut:
        """Add an MCP server for the organization (admins) or for yourself."""
        return config_out(await create_config(resources(state), tenant_context(request.user), data.spec()))

    @get("/")
    async def list_configurations(
        self,
        request: Request[Principal, str, State],
        state: State,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=400)] = None,
    ) -> ConfigPage:
        """Your effective MCP servers: the organization's and your own, by name."""
        after = _after(cursor) if cursor else None
        rows, grants = await list_configs(resources(state), tenant_context(request.user), limit, after)
        page = rows[:limit]
        return ConfigPage(
            configurations=[config_out(r, grants) for r in page],
            next_cursor=encode_cursor(page[-1].name, page[-1].id) if len(rows) > limit else None,
        )

    @get("/{config_id:uuid}")
    async def get_configuration(
        self, config_id: UUID, request: Request[Principal, str, State], state: State
    ) -> ConfigOut:
        return config_out(*await get_config(resources(state), tenant_context(request.user), config_id))

    @put("/{config_id:uuid}")
    async def replace(
        self, config_id: UUID, data: ConfigIn, request: Request[Principal, str, State], state: State
    ) -> ConfigOut:
        """Replace a configuration. Omitting `bearer_token` keeps the stored one (with auth_type bearer)."""
        ctx = tenant_context(request.user)
        return config_out(await replace_config(resources(state), ctx, config_id, data.spec()))

    @delete("/{config_id:uuid}", status_code=204)
    async def remove(self, config_id: UUID, request: Request[Principal, str, State], state: State) -> None:
        """Delete a configuration with its stored secret and tokens; OAuth grants (everyone's, for an
        organization's server) are revoked at the authorization server first."""
        await remove_config(resources(state), tenant_context(request.user), config_id)


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
    ctx = tenant_context(request.user)
    outcome = await request_test(
        resources(state), ctx, data.config_id, data.wait_seconds, current_correlation_id()
    )
    return _answer(outcome)


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
    session = await find_session(res, ctx, session_id)
    if session.user_id != ctx.user_id:
        raise PermissionDeniedException("only the session's owner calls tools in it")
    call = DirectCall(session_id, data.config_id, data.tool, data.arguments, data.timeout_seconds)
    return _answer(await request_tool_call(res, ctx, call, data.wait_seconds, current_correlation_id()))
