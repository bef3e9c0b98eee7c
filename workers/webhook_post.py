"""One outbound webhook delivery's POST to a tenant's target URL, which may name an address the
platform must not reach: the egress check runs right before it, and the connection goes to the
addresses that check vetted (``services/pinned_network.py``), not to a second lookup of the name."""

from __future__ import annotations

from schemas.settings import Settings
from services.egress import Resolver, resolve
from services.pinned_network import VettedClient


async def post_delivery(
    url: str, body: bytes, headers: dict[str, str], settings: Settings, resolver: Resolver = resolve
) -> int:
    """The status the target answered (redirects are not followed). Raises EgressRefused for a
    refused URL and httpx2.HTTPError when the target cannot be reached."""
    async with VettedClient(settings, resolver, settings.webhook_timeout_seconds) as client:
        await client.vet(url, "target_url")
        answer = await client.post(url, content=body, headers=headers)
    return answer.status_code
