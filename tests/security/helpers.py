"""What the security regression tests share: problem+json assertions and adding members."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, free_port, stack_env


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


def production_env(
    pg_urls: DbUrls, tmp_path: Path, database_url: str, jwt_secret: str
) -> tuple[dict[str, str], int]:
    """A stack's settings in the production environment, and a free port to serve on."""
    port = free_port()
    env = stack_env(pg_urls, f"agentapi-sec-{uuid.uuid4().hex[:8]}:", port, jwt_secret, tmp_path)
    env.update({"AGENTAPI_ENVIRONMENT": "production", "AGENTAPI_DATABASE_URL": database_url})
    return env, port
