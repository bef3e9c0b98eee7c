"""The ``tools`` pool's work: MCP tool calls and connection tests, answered over the result path.

Each request names an MCP configuration; the worker loads it under the requester's tenant
context (RLS decides whether they may use it), opens its secret, goes through the server's circuit
breaker and the client pool, then answers: on the session's event log when there is a session,
and on the request's reply stream when the ingress is waiting. Every tool call is audited.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from redis.asyncio.client import Pipeline
from sqlmodel import select

from events.audit import audit_event, redact_details
from events.envelope import Event, EventType
from events.metrics import count
from events.payloads import McpWork, ToolCall
from events.publisher import queue_publish
from events.results import append_reply
from schemas.crypto import DecryptionError, SecretRef
from schemas.db import TenantContext, tenant_transaction
from schemas.tables import McpConfiguration, McpOAuthToken
from services.egress import EgressRefused
from services.mcp.oauth_client import OAuthFlowError
from services.mcp.oauth_grants import ACCESS, is_due, open_secret
from workers.circuit_breaker import CircuitBreaker, CircuitOpen
from workers.context import WorkerContext
from workers.loaded_configs import Loaded, LoadedConfigs
from workers.mcp_client import (
    ClientPool,
    McpTimeout,
    McpToolError,
    McpUnauthorized,
    McpUnavailable,
    ServerSpec,
)
from workers.oauth_refresh import NeedsReauth, TokenRefresher, reconnect_hint

log = logging.getLogger(__name__)


class ToolRequestError(Exception):
    """The request cannot be served as asked (unknown configuration, not connected, refused)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# Failures answered to the caller as a result; anything else is a bug and goes to Dramatiq/Sentry.
REPORTED_FAILURES = (
    ToolRequestError,
    McpToolError,
    McpUnavailable,
    McpUnauthorized,
    CircuitOpen,
    EgressRefused,
)


class ToolService:
    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        settings = context.settings
        self.pool = ClientPool(settings)
        self.loaded = LoadedConfigs(context.redis, context.names)
        self.refresher = TokenRefresher(context)
        self.breaker = CircuitBreaker(
            context.redis, context.names, settings.mcp_breaker_threshold, settings.mcp_breaker_reset_seconds
        )

    async def load(self, event: Event) -> Loaded:
        """The request's configuration as its caller may use it, reused from their earlier call
        at the same version (the gateway sends the version it listed)."""
        work = McpWork.of(event)
        try:
            config_id = UUID(work.config_id)
        except ValueError as exc:
            raise ToolRequestError("not_found", "no such MCP configuration") from exc
        key = (event.org_id, event.user_id, config_id)
        cached = self.loaded.get(key, work.version)
        if cached is not None and (cached[2] is None or not is_due(cached[2], self.context.settings)):
            return cached
        epoch, started = self.loaded.epoch, time.monotonic()
        loaded = await self._load(event, config_id)
        self.loaded.put(key, loaded, epoch, started)
        return loaded

    async def _load(self, event: Event, config_id: UUID) -> Loaded:
        # The requester's own context: RLS shows org configs and only their own user configs.
        ctx = TenantContext(org_id=event.org_id, user_id=event.user_id, role="member")
        grant: McpOAuthToken | None = None
        async with tenant_transaction(self.context.engine, ctx) as db:
            row = (
                await db.exec(
                    select(McpConfiguration).where(
                        McpConfiguration.id == config_id, McpConfiguration.org_id == event.org_id
                    )
                )
            ).first()
            if row is None or not row.enabled:
                raise ToolRequestError("not_found", "no such MCP configuration, or it is disabled")
            if row.auth_type == "oauth":
                grant = (
                    await db.exec(
                        select(McpOAuthToken).where(
                            McpOAuthToken.configuration_id == row.id, McpOAuthToken.user_id == event.user_id
                        )
                    )
                ).first()
        if grant is not None and grant.status == "connected" and is_due(grant, self.context.settings):
            grant = await self._refreshed(row, grant, event)
        return row, self._spec(row, self._token(row, grant, event), event), grant

    def _spec(self, row: McpConfiguration, token: str | None, event: Event) -> ServerSpec:
        return ServerSpec(
            config_id=row.id,
            # An OAuth grant is the user's own: their calls get an upstream session of their own.
            caller=event.user_id if row.auth_type == "oauth" else None,
            version=row.updated_at,
            transport=row.transport,
            endpoint_url=row.endpoint_url,
            command=row.command,
            args=tuple(row.args),
            env=tuple(sorted(row.env.items())),
            token=token,
        )

    def _token(self, row: McpConfiguration, grant: McpOAuthToken | None, event: Event) -> str | None:
        ring = self.context.settings.key_ring()
        try:
            if row.auth_type == "bearer" and row.encrypted_secret:
                return ring.decrypt(
                    row.encrypted_secret,
                    SecretRef("mcp_configurations", "encrypted_secret", row.id, row.org_id),
                )
            if row.auth_type == "oauth":
                if grant is None:
                    raise ToolRequestError(
                        "needs_auth",
                        f"{row.name} is not connected: connect it with POST /api/v1/mcp/oauth/init",
                    )
                if grant.status != "connected":
                    raise ToolRequestError(
                        "needs_reauth", reconnect_hint(row.name, "the authorization was withdrawn or expired")
                    )
                return open_secret(ring, grant, ACCESS)
        except DecryptionError as exc:
            log.error("secret of MCP configuration %s does not open: %s", row.id, exc)
            raise ToolRequestError(
                "secret_unavailable", "the configuration's secret cannot be opened"
            ) from exc
        return None

    async def _refreshed(
        self, row: McpConfiguration, grant: McpOAuthToken, event: Event, *, stale: bool = False
    ) -> McpOAuthToken:
        """The grant after a refresh (``stale``: the server just refused its access token)."""
        try:
            return await self.refresher.refresh(
                grant, stale_access=grant.encrypted_access_token if stale else None, request=event
            )
        except NeedsReauth as exc:
            raise ToolRequestError("needs_reauth", reconnect_hint(row.name, str(exc))) from exc
        except OAuthFlowError as exc:
            raise ToolRequestError(
                "auth_unavailable", f"{row.name}: refreshing its token failed: {exc}"
            ) from exc

    async def _authorized(
        self, event: Event, work: Callable[[ServerSpec], Awaitable[Any]]
    ) -> tuple[McpConfiguration, Any]:
        """Runs ``work`` against the request's server; when the server refuses an OAuth grant's
        access token, the grant is refreshed once and the work tried once more."""
        row, spec, grant = await self.load(event)
        try:
            return row, await self._guarded(spec, work(spec))
        except McpUnauthorized:
            if grant is None:
                raise
        self.loaded.drop((event.org_id, event.user_id, row.id))
        grant = await self._refreshed(row, grant, event, stale=True)
        retry = self._spec(row, self._token(row, grant, event), event)
        return row, await self._guarded(retry, work(retry))

    async def list_tools(self, event: Event) -> None:
        """``mcp.test_requested``: connect, list the tools, cache them for the gateway, answer."""
        started = time.monotonic()
        payload: dict[str, Any]
        try:
            row, tools = await self._authorized(event, self.pool.list_tools)
            await self.context.redis.set(
                self.context.names.mcp_tools(row.id),
                json.dumps({"version": row.updated_at.isoformat(), "tools": tools}),
                ex=max(self.context.settings.mcp_tools_cache_seconds, 1),
            )
            payload = {"ok": True, "config_id": str(row.id), "tools": tools}
        except REPORTED_FAILURES as exc:
            payload = {"ok": False, "config_id": McpWork.of(event).config_id, **_error(exc)}
        payload["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        await self._answer(event, EventType.MCP_TEST_COMPLETED, payload)

    async def call_tool(self, event: Event) -> None:
        """``tool_call.requested``: call one tool, report progress and the outcome, audit it."""
        started = time.monotonic()
        request = ToolCall.of(event)
        tool, arguments, config_id = request.tool, request.arguments, request.config_id
        outcome, result_type = "success", EventType.TOOL_CALL_COMPLETED
        payload: dict[str, Any] = {"call_id": event.id, "config_id": config_id, "tool": tool}
        try:

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                if event.session_id is not None:
                    await self._session_event(
                        event,
                        EventType.TOOL_CALL_PROGRESS,
                        {
                            "call_id": event.id,
                            "tool": tool,
                            "progress": done,
                            "total": total,
                            "message": message,
                        },
                    )

            timeout = request.timeout or self.context.settings.mcp_call_timeout_seconds
            _, result = await self._authorized(
                event, lambda spec: self.pool.call_tool(spec, tool, dict(arguments), timeout, on_progress)
            )
            payload |= {"ok": True, **result}
        except REPORTED_FAILURES as exc:
            outcome, result_type = (
                ("error" if isinstance(exc, McpToolError) else "failure"),
                EventType.TOOL_CALL_FAILED,
            )
            payload |= {"ok": False, **_error(exc)}
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        payload["duration_ms"] = duration_ms

        def recorded(pipe: Pipeline) -> None:
            """The count and the audit record, after the answer, off the caller's wait."""
            count(pipe, self.context.names, "tool_calls", outcome=str(payload.get("error_code", "success")))
            queue_publish(
                pipe,
                self.context.names,
                audit_event(
                    org_id=event.org_id,
                    actor_user_id=event.user_id,
                    action="mcp.tool_call",
                    outcome=outcome,
                    resource_type="mcp_configuration",
                    resource_id=config_id,
                    details={
                        "tool": tool,
                        "source": request.source,
                        "duration_ms": duration_ms,
                        "arguments": redact_details(arguments),
                        "error": payload.get("error"),
                    },
                    correlation_id=event.correlation_id,
                    session_id=event.session_id,
                ),
            )

        await self._answer(event, result_type, payload, then=recorded)

    async def _guarded(self, spec: ServerSpec, work: Any) -> Any:
        """Runs ``work`` behind the server's circuit breaker."""
        try:
            troubled = await self.breaker.before_call(spec.config_id)
        except BaseException:
            # Open, or the breaker's state unreadable (Redis lost): ``work`` never starts, and is
            # closed so that it is not left to the garbage collector's "never awaited".
            work.close()
            raise
        try:
            result = await work
        except McpUnavailable:
            if await self.breaker.record_failure(spec.config_id):
                log.warning("circuit opened for MCP configuration %s", spec.config_id)
            raise
        if troubled:
            await self.breaker.record_success(spec.config_id)
        return result

    async def _session_event(self, request: Event, type_: EventType, payload: dict[str, Any]) -> None:
        await self.context.emit(
            Event(
                type=type_,
                org_id=request.org_id,
                user_id=request.user_id,
                session_id=request.session_id,
                correlation_id=request.correlation_id,
                payload=payload,
            )
        )

    async def _answer(
        self,
        request: Event,
        type_: EventType,
        payload: dict[str, Any],
        then: Callable[[Pipeline], None] | None = None,
    ) -> None:
        """The outcome to the waiting caller (first), to the session's log, then ``then``'s commands:
        with a session, one round trip for the first two and one for the webhook notice and the rest."""
        answer = Event(
            type=type_,
            org_id=request.org_id,
            user_id=request.user_id,
            session_id=request.session_id,
            correlation_id=request.correlation_id,
            payload=payload,
        )
        reply_to = request.id if McpWork.of(request).reply else None
        if request.session_id is not None:
            await self.context.emit(answer, reply_to=reply_to, then=then)
            return
        if reply_to is not None:
            await append_reply(self.context.redis, self.context.names, reply_to, answer)
        if then is not None:
            async with self.context.redis.pipeline(transaction=False) as pipe:
                then(pipe)
                await pipe.execute()


def _error(exc: Exception) -> dict[str, str]:
    if isinstance(exc, ToolRequestError):
        code = exc.code
    elif isinstance(exc, CircuitOpen):
        code = "circuit_open"
    elif isinstance(exc, McpTimeout):
        code = "timeout"
    elif isinstance(exc, McpUnavailable):
        code = "unavailable"
    elif isinstance(exc, EgressRefused):
        code = "egress_refused"
    elif isinstance(exc, McpUnauthorized):
        code = "unauthorized"
    else:
        code = "tool_error"
    return {"error_code": code, "error": str(exc)}
