"""Database engines and the one way to open a tenant-scoped transaction.

On PostgreSQL a process holds two engines: the service role's, for everything a tenant asks, and
the platform role's beside it, which :func:`tenant_transaction` alone picks for a superadmin
context. Row-Level Security grants cross-organization rows only to members of the platform role,
so setting ``app.role`` on the service connection (say, through an injected statement) crosses
nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID
from weakref import WeakKeyDictionary

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from schemas.roles import SUPERADMIN

if TYPE_CHECKING:
    from schemas.settings import Settings

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


# Each service engine's platform engine (see the module's docstring). Kept beside the engine, not
# in a pair every caller passes, because every caller of tenant_transaction already holds the
# service engine and only superadmin transactions need the other.
_PLATFORM: WeakKeyDictionary[AsyncEngine, AsyncEngine] = WeakKeyDictionary()


class PlatformConnectionMissing(RuntimeError):
    """Cross-organization work on PostgreSQL without the platform role's connection."""


def open_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    """The service role's engine, with the platform role's attached when configured."""
    size = settings.db_pool_size if pool_size is None else pool_size
    engine = create_engine(settings.database_url, pool_size=size)
    if settings.platform_database_url and engine.dialect.name == "postgresql":
        attach_platform(engine, create_engine(settings.platform_database_url, pool_size=max(2, size // 4)))
    return engine


def attach_platform(engine: AsyncEngine, platform: AsyncEngine) -> None:
    """``platform`` serves ``engine``'s superadmin transactions."""
    _PLATFORM[engine] = platform


def platform_engine(engine: AsyncEngine) -> AsyncEngine:
    if engine.dialect.name != "postgresql":
        return engine  # SQLite (development) has no roles and no Row-Level Security
    platform = _PLATFORM.get(engine)
    if platform is None:
        raise PlatformConnectionMissing(
            "cross-organization work needs the platform role's connection: set AGENTAPI_PLATFORM_DATABASE_URL"
        )
    return platform


async def dispose_engine(engine: AsyncEngine) -> None:
    platform = _PLATFORM.pop(engine, None)
    if platform is not None:
        await platform.dispose()
    await engine.dispose()


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
    Nothing else in the codebase sets ``app.*``. A superadmin context runs on the platform engine.
    """
    if ctx.role == SUPERADMIN:
        engine = platform_engine(engine)
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


async def rls_bypass_reason(engine: AsyncEngine, platform_role: str) -> str | None:
    """Why the engine's PostgreSQL role would not be held by Row-Level Security (a superuser, a
    BYPASSRLS role, the owner of the tenant tables, or a member of the platform role, which crosses
    organizations at will), or None; the same for its platform engine, which must be that role.
    SQLite has no roles."""
    if engine.dialect.name != "postgresql":
        return None
    reason = await _bypass(engine, platform_role, as_platform=False)
    platform = _PLATFORM.get(engine)
    if reason is None and platform is not None:
        reason = await _bypass(platform, platform_role, as_platform=True)
    return reason


async def _bypass(engine: AsyncEngine, platform_role: str, *, as_platform: bool) -> str | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT r.rolname, r.rolsuper, r.rolbypassrls,"
                    " EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = 'public'"
                    "         AND t.tablename = 'memberships' AND t.tableowner = r.rolname),"
                    " COALESCE((SELECT pg_has_role(r.oid, p.oid, 'MEMBER') FROM pg_roles p"
                    "           WHERE p.rolname = :platform), false)"
                    " FROM pg_roles r WHERE r.rolname = current_user"
                ),
                {"platform": platform_role},
            )
        ).one()
    name, superuser, bypass, owner, member = row
    if as_platform and not member:
        return f"AGENTAPI_PLATFORM_DATABASE_URL connects as {name}, not as the platform role {platform_role}"
    if member and not as_platform and not superuser:
        return f"the database role {name} is a member of the platform role {platform_role}"
    if superuser:
        return f"the database role {name} is a superuser"
    if bypass:
        return f"the database role {name} has BYPASSRLS"
    if owner:
        return f"the database role {name} owns the tenant tables (use the service role; migrations run as the owner)"
    return None
