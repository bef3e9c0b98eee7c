"""What the security regression tests share: problem+json assertions and adding members."""

from __future__ import annotations

import uuid

import httpx

from tests.fixtures.stack import Stack


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, object] = response.json()
    assert body["status"] == status
    return body


async def add_member(client: httpx.AsyncClient, stack: Stack, role: str) -> tuple[uuid.UUID, dict[str, str]]:
    """A user the stack's owner adds with ``role``, and headers for them."""
    user_id = uuid.uuid4()
    response = await client.post(
        f"/api/v1/orgs/{stack.org_id}/members",
        json={"user_id": str(user_id), "role": role},
        headers=stack.headers(role="owner"),
    )
    assert response.status_code == 201, response.text
    return user_id, stack.headers(user_id=user_id, role=role)
