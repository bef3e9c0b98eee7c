"""What the security regression tests share: problem+json assertions, adding members, and a tools
worker's MCP client pool with a reply limit."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

from schemas.settings import Settings
from tests.fixtures.postgres import DbUrls
from tests.fixtures.stack import Stack, free_port, stack_env
from workers.mcp_client import ClientPool, ServerSpec


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


@asynccontextmanager
async def limited_pool(limit: int) -> AsyncIterator[ClientPool]:
    """A tools worker's upstream clients, reading at most ``limit`` bytes of a reply (plain HTTP
    allowed, to servers on 127.0.0.1), closed afterwards."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        jwt_secret="x" * 32,
        mcp_allow_insecure_http=True,
        mcp_max_reply_bytes=limit,
    )
    pool = ClientPool(settings)
    try:
        yield pool
    finally:
        await pool.close()


def url_spec(transport: str, url: str) -> ServerSpec:
    """A configuration of its own for the server at ``url``."""
    return ServerSpec(
        config_id=uuid.uuid4(),
        version=datetime(2026, 12, 3, tzinfo=UTC),
        transport=transport,
        endpoint_url=url,
        command=None,
        args=(),
        env=(),
    )


async def hung_up(event: threading.Event) -> bool:
    """Whether a hostile server saw the worker hang up within 10 s. Waited for off the event loop:
    the worker's socket closes at the loop's next turn, and a server blocked writing into a full
    receive window sees nothing before it does."""
    return await asyncio.to_thread(event.wait, 10)
