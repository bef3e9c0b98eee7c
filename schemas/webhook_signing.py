"""HMAC-SHA256 signatures for webhooks, the same both ways: inbound deliveries are verified with it,
outbound notifications carry it.

Headers: ``X-Agentapi-Timestamp`` (unix seconds), ``X-Agentapi-Delivery`` (a unique id) and
``X-Agentapi-Signature: sha256=<hex of HMAC(secret, "<timestamp>." + body)>``.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from schemas.crypto import SecretRef
from schemas.tables import Webhook

TIMESTAMP_HEADER = "X-Agentapi-Timestamp"
SIGNATURE_HEADER = "X-Agentapi-Signature"
DELIVERY_HEADER = "X-Agentapi-Delivery"
# A signed request older or newer than this is refused, so a captured one cannot be replayed later.
WINDOW_SECONDS = 300


def secret_ref(row: Webhook) -> SecretRef:
    return SecretRef("webhooks", "encrypted_secret", row.id, row.org_id)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: str, delivery_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {
        TIMESTAMP_HEADER: timestamp,
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        "Content-Type": "application/json",
    }


def verify(
    secret: str, timestamp: str | None, given: str | None, body: bytes, now: float | None = None
) -> str | None:
    """None when the signature holds and is fresh; otherwise why not."""
    if not timestamp or not given:
        return f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required"
    if not timestamp.isdigit():
        return f"{TIMESTAMP_HEADER} must be unix seconds"
    if abs((time.time() if now is None else now) - int(timestamp)) > WINDOW_SECONDS:
        return f"the timestamp is outside the {WINDOW_SECONDS} s window"
    if not hmac.compare_digest(signature(secret, timestamp, body), given):
        return "the signature does not match"
    return None
