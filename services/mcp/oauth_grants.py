"""A user's OAuth grant for one MCP configuration (``mcp_oauth_tokens``): sealing the tokens the
authorization server issued, opening them, and the refresh request that keeps them fresh.

Each secret column is sealed with the row's identity as associated data, so a token copied to
another row or tenant does not open.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from events.envelope import Event, EventType, new_event_id
from events.payloads import OAuthRefresh
from schemas.crypto import KeyRing, SecretRef
from schemas.settings import Settings
from schemas.tables import McpOAuthToken, utcnow
from services.mcp.oauth_client import ClientInfo, revoke

log = logging.getLogger(__name__)

TABLE = "mcp_oauth_tokens"
ACCESS = "encrypted_access_token"
REFRESH = "encrypted_refresh_token"
CLIENT_SECRET = "encrypted_client_secret"


def _ref(row: McpOAuthToken, column: str) -> SecretRef:
    return SecretRef(TABLE, column, row.id, row.org_id)


def seal(ring: KeyRing, row: McpOAuthToken, column: str, value: str) -> str:
    return ring.encrypt(value, _ref(row, column))


def open_secret(ring: KeyRing, row: McpOAuthToken, column: str) -> str | None:
    sealed = getattr(row, column)
    return ring.decrypt(sealed, _ref(row, column)) if sealed else None


def client_of(row: McpOAuthToken) -> ClientInfo:
    return ClientInfo.from_json(row.client)


def _expiry(token: dict[str, Any]) -> datetime | None:
    if token.get("expires_at"):
        return datetime.fromtimestamp(int(token["expires_at"]), UTC)
    if token.get("expires_in"):
        return utcnow() + timedelta(seconds=int(token["expires_in"]))
    return None


def store_tokens(ring: KeyRing, row: McpOAuthToken, token: dict[str, Any]) -> None:
    """Seal a token response into the row and mark it connected. A refresh answer without a new
    refresh token keeps the old one (RFC 6749 §6)."""
    row.encrypted_access_token = seal(ring, row, ACCESS, str(token["access_token"]))
    if token.get("refresh_token"):
        row.encrypted_refresh_token = seal(ring, row, REFRESH, str(token["refresh_token"]))
    row.expires_at = _expiry(token)
    if token.get("scope"):
        row.scopes = str(token["scope"])[:2048]
    row.status = "connected"
    row.updated_at = utcnow()


def is_due(row: McpOAuthToken, settings: Settings) -> bool:
    """Whether the access token expires within the refresh margin (or already has)."""
    if row.expires_at is None:
        return False
    return row.expires_at - timedelta(seconds=settings.mcp_oauth_refresh_margin_seconds) <= utcnow()


def refresh_request(
    row: McpOAuthToken, settings: Settings, correlation_id: str | None = None
) -> Event | None:
    """The ``default``-pool job that refreshes this grant shortly before it expires; ``version``
    lets the job see that someone refreshed in between (and scheduled their own)."""
    if row.expires_at is None or row.encrypted_refresh_token is None or row.status != "connected":
        return None
    not_before = row.expires_at - timedelta(seconds=settings.mcp_oauth_refresh_margin_seconds)
    return Event(
        type=EventType.MCP_OAUTH_REFRESH_REQUESTED,
        org_id=row.org_id,
        user_id=row.user_id,
        payload=OAuthRefresh(
            grant_id=str(row.id),
            config_id=str(row.configuration_id),
            version=row.updated_at.isoformat(),
            not_before=not_before.isoformat(),
        ).payload(),
        correlation_id=correlation_id or new_event_id(),
    )


async def revoke_grant(ring: KeyRing, row: McpOAuthToken, settings: Settings) -> bool:
    """RFC 7009 for the grant's refresh token (which ends the grant on most servers) and its access
    token; True when the server confirmed every revocation. Best effort: the caller deletes the row
    whatever the server says."""
    client, secret = client_of(row), open_secret(ring, row, CLIENT_SECRET)
    refresh_token = open_secret(ring, row, REFRESH)
    confirmed = True
    if refresh_token:
        confirmed = await revoke(client, secret, refresh_token, "refresh_token", settings)
    access = open_secret(ring, row, ACCESS)
    if access:
        confirmed = await revoke(client, secret, access, "access_token", settings) and confirmed
    return confirmed


async def revoke_grants(ring: KeyRing, grants: list[McpOAuthToken], settings: Settings) -> bool:
    """Revokes each grant at its server; True when every server confirmed. A failure is logged and
    never keeps tokens alive here: the caller deletes the rows either way."""
    confirmed = True
    for grant in grants:
        try:
            confirmed = await revoke_grant(ring, grant, settings) and confirmed
        except Exception as exc:
            log.warning("revoking OAuth grant %s failed: %s", grant.id, exc.__class__.__name__)
            confirmed = False
    return confirmed
