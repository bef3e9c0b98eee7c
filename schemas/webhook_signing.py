"""Webhook signatures, the same both ways, in the Standard Webhooks scheme (standardwebhooks.com),
with its reference library: inbound deliveries are verified with it, outbound notifications carry it.

Headers: ``webhook-id`` (the delivery's unique id), ``webhook-timestamp`` (unix seconds) and
``webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``. The id is
signed, so a receiver deduplicates on it: a captured delivery re-sent under a new id no longer
verifies (the old ``X-Agentapi-*`` scheme signed only ``<timestamp>.<body>``).

Secrets are ``whsec_<base64 key>``, which every Standard Webhooks library takes as it is. Secrets
issued before the switch (no prefix) keep working: their UTF-8 bytes are the key, which is how the
old scheme used them, so a receiver only changes the headers it reads (README, "Webhooks").
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks import WebhookVerificationError

from schemas.crypto import SecretRef
from schemas.tables import Webhook

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
MAX_ID_LENGTH = 128
# The library's tolerance: a signed request older or newer than this is refused.
WINDOW_SECONDS = 300


def secret_ref(row: Webhook) -> SecretRef:
    return SecretRef("webhooks", "encrypted_secret", row.id, row.org_id)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _signer(secret: str) -> StandardWebhook:
    # A pre-Standard-Webhooks secret is not base64: its bytes are the key, as they always were.
    return StandardWebhook(secret if secret.startswith(SECRET_PREFIX) else secret.encode())


def signed_headers(secret: str, delivery_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    return {
        ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(int(moment.timestamp())),
        SIGNATURE_HEADER: _signer(secret).sign(delivery_id, moment, body.decode()),
        "Content-Type": "application/json",
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """None when the signature over id, timestamp and body holds and is fresh; otherwise why not."""
    delivery_id = headers.get(ID_HEADER, "")
    if not headers.get(SIGNATURE_HEADER) or not headers.get(TIMESTAMP_HEADER) or not delivery_id:
        return f"{ID_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required"
    if len(delivery_id) > MAX_ID_LENGTH:
        return f"{ID_HEADER} is longer than {MAX_ID_LENGTH} characters"
    wanted = {name: headers[name] for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)}
    try:
        _signer(secret).verify(body.decode(), wanted, json_parse=False)
    except WebhookVerificationError as exc:
        return f"the signature does not verify: {exc}"
    except UnicodeDecodeError:
        return "the body is not UTF-8 text"
    except (ValueError, binascii.Error):
        # The library unpacks each "v1,<base64>" entry without checking its shape.
        return f"{SIGNATURE_HEADER} must be space-separated v1,<base64> entries"
    return None
