"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from litestar import Response, get
from litestar.datastructures import State
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.state import resources
from schemas.settings import Settings
from services.sandbox_probe import probe

READY_TIMEOUT_SECONDS = 2.0


@get("/health", sync_to_thread=False, security=[{}], tags=["operations"])
def health() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@get("/ready", security=[{}], tags=["operations"])
async def ready(state: State) -> Response[dict[str, object]]:
    """PostgreSQL (or SQLite) and Redis both answer."""
    res = resources(state)

    async def database() -> None:
        async with res.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await res.redis.ping()

    checks: dict[str, str] = {}
    for name, check in (("database", database), ("redis", redis)):
        try:
            await asyncio.wait_for(check(), READY_TIMEOUT_SECONDS)
            checks[name] = "ok"
        except (TimeoutError, SQLAlchemyError, RedisError, OSError) as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    if res.draining.is_set():
        checks["process"] = "unavailable: shutting down"
    checks["sandbox"] = await sandbox_check(res.settings)
    # Development may run unconfined (it says so); anywhere else no sandbox means not ready.
    ok = all(
        value == "ok" or (name == "sandbox" and res.settings.environment == "development")
        for name, value in checks.items()
    )
    return Response(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": "5"},
    )


async def sandbox_check(settings: Settings) -> str:
    """``ok`` when tenant processes can be sandboxed here, else what is missing (probed once)."""
    if settings.sandbox == "none":
        return "disabled: AGENTAPI_SANDBOX=none (development only)"
    problem = await asyncio.to_thread(probe)
    return "ok" if problem is None else f"unavailable: {problem}"
