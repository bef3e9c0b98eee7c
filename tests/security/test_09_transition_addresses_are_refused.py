"""Finding 9: IPv6 transition addresses (6to4, NAT64, Teredo) embedding internal IPv4 addresses
were accepted as MCP endpoints and webhook targets."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.stack import Stack
from tests.security.helpers import assert_problem

EMBEDDING_METADATA = [
    "https://[2002:a9fe:a9fe::]/mcp",  # 6to4 of 169.254.169.254
    "https://[64:ff9b::a9fe:a9fe]/mcp",  # NAT64 well-known prefix
    "https://[64:ff9b:1::a9fe:a9fe]/mcp",  # NAT64 local-use prefix
    "https://[2002:0a00:0001::1]/mcp",  # 6to4 of 10.0.0.1
    # Teredo: server 65.54.227.120, client 192.168.0.1 (obfuscated as 3f57:ff fe)
    "https://[2001:0:4136:e378:8000:63bf:3f57:fffe]/mcp",
]


@pytest.mark.parametrize("url", EMBEDDING_METADATA)
async def test_transition_addresses_are_refused_for_mcp_and_webhooks(stack: Stack, url: str) -> None:
    admin = stack.headers(role="admin")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        mcp = await client.post(
            "/api/v1/mcp/configurations",
            json={"name": "transit", "transport": "http", "endpoint_url": url},
            headers=admin,
        )
        assert any(e["field"] == "endpoint_url" for e in assert_problem(mcp, 422)["errors"])  # type: ignore[attr-defined]
        hook = await client.post(
            "/api/v1/webhooks",
            json={
                "name": "transit",
                "direction": "outbound",
                "target_url": url,
                "event_types": ["session.ended"],
            },
            headers=admin,
        )
        assert any(e["field"] == "target_url" for e in assert_problem(hook, 422)["errors"])  # type: ignore[attr-defined]
