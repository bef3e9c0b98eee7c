"""Finding 3: an admin ``PUT`` of the owner's MCP configuration with a new ``endpoint_url`` and no
``bearer_token`` kept the token, and ``/mcp/test`` then sent ``Bearer <owner's token>`` to the new
host. Changing the endpoint now needs the token again."""

from __future__ import annotations

import httpx

from tests.fixtures.stack import Stack
from tests.security.helpers import add_member, assert_problem

# Public addresses as literals: the egress check accepts them without DNS; nothing connects.
OLD, NEW = "https://93.184.216.34/mcp", "https://93.184.215.14/mcp"


async def test_an_endpoint_change_needs_the_bearer_token_again(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as client:
        _, admin = await add_member(client, stack, "admin")
        body = {"name": "owners", "scope": "organization", "transport": "http", "auth_type": "bearer"}
        created = await client.post(
            "/api/v1/mcp/configurations",
            json={**body, "endpoint_url": OLD, "bearer_token": "owner-secret-token"},
            headers=stack.headers(role="owner"),
        )
        assert created.status_code == 201, created.text
        url = f"/api/v1/mcp/configurations/{created.json()['id']}"

        moved = await client.put(url, json={**body, "endpoint_url": NEW}, headers=admin)
        problem = assert_problem(moved, 422)
        assert [e["field"] for e in problem["errors"]] == ["bearer_token"]  # type: ignore[attr-defined]
        assert (await client.get(url, headers=admin)).json()["endpoint_url"] == OLD

        # Same host: the stored token is kept, as documented; a new host with its own token is fine.
        assert (await client.put(url, json={**body, "endpoint_url": OLD}, headers=admin)).status_code == 200
        replaced = await client.put(
            url, json={**body, "endpoint_url": NEW, "bearer_token": "the-new-hosts-token"}, headers=admin
        )
        assert replaced.status_code == 200, replaced.text
