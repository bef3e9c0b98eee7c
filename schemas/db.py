"""Database engines and the one way to open a tenant-scoped transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

_SET_CONTEXT = text(
    "SELECT set_config('app.org_id', :org_id, true), set_config('app.user_id', :user_id, true),"
    " set_config('app.role', :role, true)"
)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
            # WAL and a busy timeout let the dev ingress and worker processes share one file.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


@dataclass(frozen=True)
class TenantContext:
    org_id: UUID | None
    user_id: UUID | None
    role: str


@dataclass(frozen=True)
class MemberContext(TenantContext):
    """A caller's context: the organization and the user are both known."""

    org_id: UUID
    user_id: UUID


def dialect_insert(db: AsyncSession, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` in the session's dialect, for its ``ON CONFLICT`` clauses (both
    backends spell ``on_conflict_do_nothing``/``on_conflict_do_update`` and ``excluded`` alike)."""
    if db.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


@asynccontextmanager
async def tenant_transaction(engine: AsyncEngine, ctx: TenantContext) -> AsyncIterator[AsyncSession]:
    """A transaction whose PostgreSQL settings scope Row-Level Security to ``ctx``.

    The settings are transaction-local (``set_config(..., true)``), so a pooled connection never
    carries one tenant's context into another's request. Commits on success, rolls back on error.
    Nothing else in the codebase sets ``app.*``.
    """
    async with AsyncSession(engine, expire_on_commit=False) as db, db.begin():
        if engine.dialect.name == "postgresql":
            connection = await db.connection()
            await connection.execute(
                _SET_CONTEXT,
                {
                    "org_id": str(ctx.org_id) if ctx.org_id else "",
                    "user_id": str(ctx.user_id) if ctx.user_id else "",
                    "role": ctx.role,
                },
            )
        yield db


async def rls_bypass_reason(engine: AsyncEngine) -> str | None:
    """Why the engine's PostgreSQL role would not be held by Row-Level Security (a superuser, a
    BYPASSRLS role, or the owner of the tenant tables), or None. SQLite has no roles."""
    if engine.dialect.name != "postgresql":
        return None
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT r.rolname, r.rolsuper, r.rolbypassrls,"
                    " EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = 'public'"
                    "         AND t.tablename = 'memberships' AND t.tableowner = r.rolname)"
                    " FROM pg_roles r WHERE r.rolname = current_user"
                )
            )
        ).one()
    name, superuser, bypass, owner = row
    if superuser:
        return f"the database role {name} is a superuser"
    if bypass:
        return f"the database role {name} has BYPASSRLS"
    if owner:
        return f"the database role {name} owns the tenant tables (use the service role; migrations run as the owner)"
    return None
