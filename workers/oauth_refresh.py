"""Keeping OAuth grants fresh, for the ``default`` pool's scheduled refresh and for ``tools`` workers
(before a call when the token is due, and once after a 401).

One refresh at a time per grant, under a Redis lock: authorization servers may rotate refresh
tokens, so two workers spending the same one would lose the grant. Whoever gets the lock second
finds the tokens already changed and uses them. A refusal from the server (``invalid_grant`` and
kin) marks the connection ``needs_reauth``, audits it and tells the session, if there is one;
an unreachable server is only an error for this attempt.
"""

from __future__ import annotations

import logging
from uuid import UUID

from redis.exceptions import LockError
from sqlmodel import select

from events.audit import audit_event
from events.envelope import Event, EventType, new_event_id
from events.payloads import OAuthRefresh
from events.publisher import publish
from schemas.crypto import DecryptionError
from schemas.db import TenantContext, tenant_transaction
from schemas.tables import McpConfiguration, McpOAuthToken, utcnow
from services.mcp.changes import announce_change
from services.mcp.oauth_client import GrantRejected, OAuthFlowError, refresh
from services.mcp.oauth_grants import (
    CLIENT_SECRET,
    REFRESH,
    client_of,
    is_due,
    open_secret,
    refresh_request,
    store_tokens,
)
from workers.context import WorkerContext

log = logging.getLogger(__name__)

LOCK_SECONDS = 60
LOCK_WAIT_SECONDS = 30


class NeedsReauth(Exception):
    """Only the user can fix this: they must connect the server again."""


def reconnect_hint(config_name: str, reason: str) -> str:
    return f"{config_name} needs authorization again ({reason}); connect it with POST /api/v1/mcp/oauth/init"


class TokenRefresher:
    def __init__(self, context: WorkerContext) -> None:
        self.context = context

    def _ctx(self, org_id: UUID, user_id: UUID) -> TenantContext:
        return TenantContext(org_id=org_id, user_id=user_id, role="member")

    async def _load(self, ctx: TenantContext, grant_id: UUID) -> McpOAuthToken | None:
        async with tenant_transaction(self.context.engine, ctx) as db:
            return (await db.exec(select(McpOAuthToken).where(McpOAuthToken.id == grant_id))).first()

    async def refresh(
        self,
        grant: McpOAuthToken,
        *,
        stale_access: str | None = None,
        request: Event | None = None,
    ) -> McpOAuthToken:
        """The grant with a usable access token. ``stale_access`` (a ciphertext) forces a refresh
        unless the tokens already changed since it was read; without it, only a due token is
        refreshed. Raises NeedsReauth, or OAuthFlowError when the server could not be asked."""
        ctx = self._ctx(grant.org_id, grant.user_id)
        try:
            async with self.context.redis.lock(
                self.context.names.oauth_refresh_lock(grant.id),
                timeout=LOCK_SECONDS,
                blocking_timeout=LOCK_WAIT_SECONDS,
            ):
                return await self._refresh_locked(ctx, grant.id, stale_access, request)
        except LockError as exc:
            raise OAuthFlowError("another worker is still refreshing this connection") from exc

    async def _refresh_locked(
        self, ctx: TenantContext, grant_id: UUID, stale_access: str | None, request: Event | None
    ) -> McpOAuthToken:
        settings = self.context.settings
        row = await self._load(ctx, grant_id)
        if row is None:
            raise NeedsReauth("the connection was removed")
        if row.status != "connected":
            raise NeedsReauth("the authorization was withdrawn or expired")
        if stale_access is not None and row.encrypted_access_token != stale_access:
            return row
        if stale_access is None and not is_due(row, settings):
            return row
        ring = settings.key_ring()
        try:
            refresh_token = open_secret(ring, row, REFRESH)
            secret = open_secret(ring, row, CLIENT_SECRET)
        except DecryptionError as exc:
            await self._needs_reauth(row, "its stored tokens cannot be opened", request)
            raise NeedsReauth("its stored tokens cannot be opened") from exc
        if refresh_token is None:
            await self._needs_reauth(row, "the server issued no refresh token", request)
            raise NeedsReauth("the access token expired and the server issued no refresh token")
        try:
            token = await refresh(client_of(row), secret, refresh_token, settings)
        except GrantRejected as exc:
            await self._needs_reauth(row, exc.reason, request)
            raise NeedsReauth(exc.reason) from exc
        async with tenant_transaction(self.context.engine, ctx) as db:
            stored = await db.get(McpOAuthToken, row.id)
            if stored is None:
                raise NeedsReauth("the connection was removed")
            store_tokens(ring, stored, token)
            db.add(stored)
        await announce_change(self.context.redis, self.context.names, stored.configuration_id)
        log.info("refreshed OAuth grant %s of configuration %s", stored.id, stored.configuration_id)
        follow_up = refresh_request(stored, settings, request.correlation_id if request else None)
        if follow_up is not None:
            await publish(self.context.redis, self.context.names, follow_up)
        return stored

    async def _needs_reauth(self, row: McpOAuthToken, reason: str, request: Event | None) -> None:
        ctx = self._ctx(row.org_id, row.user_id)
        async with tenant_transaction(self.context.engine, ctx) as db:
            stored = await db.get(McpOAuthToken, row.id)
            config = await db.get(McpConfiguration, row.configuration_id)
            if stored is not None:
                stored.status = "needs_reauth"
                stored.updated_at = utcnow()
                db.add(stored)
        await announce_change(self.context.redis, self.context.names, row.configuration_id)
        name = config.name if config is not None else str(row.configuration_id)
        log.warning("OAuth grant %s of configuration %s needs re-authorization: %s", row.id, name, reason)
        correlation = request.correlation_id if request else new_event_id()
        payload = {
            "config_id": str(row.configuration_id),
            "config_name": name,
            "status": "needs_reauth",
            "reason": reason,
            "message": reconnect_hint(name, reason),
        }
        if request is not None and request.session_id is not None:
            await self.context.emit(
                Event(
                    type=EventType.MCP_OAUTH_NEEDS_REAUTH,
                    org_id=row.org_id,
                    user_id=row.user_id,
                    session_id=request.session_id,
                    payload=payload,
                    correlation_id=correlation,
                )
            )
        await publish(
            self.context.redis,
            self.context.names,
            audit_event(
                org_id=row.org_id,
                actor_user_id=row.user_id,
                action="mcp.oauth.needs_reauth",
                outcome="failure",
                resource_type="mcp_configuration",
                resource_id=str(row.configuration_id),
                details={"reason": reason},
                session_id=request.session_id if request else None,
                correlation_id=correlation,
            ),
        )

    async def scheduled(self, event: Event) -> None:
        """``mcp.oauth_refresh_requested``: refresh if this job is still the grant's current one."""
        assert event.user_id is not None
        job = OAuthRefresh.of(event)
        row = await self._load(self._ctx(event.org_id, event.user_id), UUID(job.grant_id))
        if row is None or row.status != "connected" or row.updated_at.isoformat() != job.version:
            return
        if not is_due(row, self.context.settings):
            # Handed over in steps when the token outlives the broker's longest delay.
            follow_up = refresh_request(row, self.context.settings, event.correlation_id)
            if follow_up is not None:
                await publish(self.context.redis, self.context.names, follow_up)
            return
        try:
            await self.refresh(row, request=event)
        except NeedsReauth as exc:
            log.info("scheduled refresh of grant %s ended: %s", job.grant_id, exc)
