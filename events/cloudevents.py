"""Our events in CloudEvents 1.0 structured JSON: what sinks publish and what outbound webhooks send
when they opt in (``format: cloudevents``)."""

from __future__ import annotations

import json
from typing import Any

from events.envelope import Event

SPECVERSION = "1.0"
TYPE_PREFIX = "dev.agentapi."
CONTENT_TYPE = "application/cloudevents+json"


def source_of(public_base_url: str, event: Event) -> str:
    """The producing context: the organization's resource on this deployment (source + id is unique)."""
    return f"{public_base_url.rstrip('/')}/api/v1/orgs/{event.org_id}"


def to_cloudevent(event: Event, public_base_url: str) -> dict[str, Any]:
    document: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event.id,
        "source": source_of(public_base_url, event),
        "type": f"{TYPE_PREFIX}{event.type}",
        "time": event.ts.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        # Extension attributes (lower-case alphanumerics by the spec) for routing without parsing data.
        "orgid": str(event.org_id),
        "correlationid": event.correlation_id,
        "data": event.payload,
    }
    if event.session_id is not None:
        document["subject"] = str(event.session_id)
    if event.user_id is not None:
        document["userid"] = str(event.user_id)
    return document


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()
