"""Building ``audit.recorded`` events: who did what to which resource, with what outcome.

Producers (ingress and workers) publish them to the audit work stream; the audit writer stores
them. Details are redacted here, at the source, so a secret never travels as far as Redis.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from events.envelope import Event, EventType
from events.payloads import AuditRecord
from events.redaction import REDACTED, redact

MAX_DETAIL_STRING = 500
SECRET_KEY_WORDS = (
    "token",
    "secret",
    "password",
    "authorization",
    "api_key",
    "apikey",
    "credential",
    "cookie",
)
# One search per key instead of a generator over the words: every audit record's details pass here.
_SECRET_KEY = re.compile("|".join(map(re.escape, SECRET_KEY_WORDS)))


def redact_details(value: Any, depth: int = 0) -> Any:
    """A copy safe to store: secret-named keys blanked, strings scrubbed and shortened, depth capped."""
    if depth > 6:
        return "[nested too deep]"
    if isinstance(value, dict):
        return {
            str(key): REDACTED if _SECRET_KEY.search(str(key).lower()) else redact_details(item, depth + 1)
            for key, item in list(value.items())[:100]
        }
    if isinstance(value, (list, tuple)):
        return [redact_details(item, depth + 1) for item in list(value)[:100]]
    if isinstance(value, str):
        text = redact(value)
        return text if len(text) <= MAX_DETAIL_STRING else text[:MAX_DETAIL_STRING] + "…"
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact_details(str(value), depth + 1)


def audit_event(
    *,
    org_id: UUID,
    actor_user_id: UUID | None,
    action: str,
    outcome: str,
    resource_type: str | None = None,
    resource_id: str | None = None,
    details: dict[str, Any] | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    correlation_id: str | None = None,
    session_id: UUID | None = None,
) -> Event:
    record = AuditRecord(
        action=action,
        outcome=outcome,
        resource_type=resource_type,
        resource_id=resource_id,
        details=redact_details(details or {}),
        ip=ip,
        user_agent=user_agent,
    )
    extra = {"correlation_id": correlation_id} if correlation_id else {}
    return Event(
        type=EventType.AUDIT_RECORDED,
        org_id=org_id,
        user_id=actor_user_id,
        session_id=session_id,
        payload=record.payload(),
        **extra,
    )
