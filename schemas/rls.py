"""Row-Level Security policies, as SQL, for the migration and for infra/sql/rls.sql.

Every tenant table gets RLS keyed on the transaction-local settings ``app.org_id``, ``app.user_id``
and ``app.role`` (see ``schemas.db.tenant_transaction``). An unset setting reads as NULL, so a
connection without tenant context sees no rows at all.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.tables import TENANT_TABLES

HELPERS = [
    """CREATE OR REPLACE FUNCTION app_org_id() RETURNS uuid LANGUAGE sql STABLE AS
  $$ SELECT NULLIF(current_setting('app.org_id', true), '')::uuid $$""",
    """CREATE OR REPLACE FUNCTION app_user_id() RETURNS uuid LANGUAGE sql STABLE AS
  $$ SELECT NULLIF(current_setting('app.user_id', true), '')::uuid $$""",
    """CREATE OR REPLACE FUNCTION app_role() RETURNS text LANGUAGE sql STABLE AS
  $$ SELECT COALESCE(NULLIF(current_setting('app.role', true), ''), 'none') $$""",
    """CREATE OR REPLACE FUNCTION app_is_org_admin() RETURNS boolean LANGUAGE sql STABLE AS
  $$ SELECT app_role() IN ('admin', 'owner', 'superadmin') $$""",
]


def superadmin_function(platform_role: str | None) -> str:
    """``app_is_superadmin()``: since migration 0012, ``app.role=superadmin`` counts only on a
    connection whose role is a member of ``platform_role``; ``None`` gives the definition earlier
    migrations created (a later migration that re-applies the helpers must pass the role)."""
    platform = f" AND pg_has_role({_literal(platform_role)}, 'MEMBER')" if platform_role else ""
    return f"""CREATE OR REPLACE FUNCTION app_is_superadmin() RETURNS boolean LANGUAGE sql STABLE AS
  $$ SELECT app_role() = 'superadmin'{platform} $$"""


_IN_ORG = "org_id = app_org_id()"
_OWN_OR_ADMIN = "(user_id = app_user_id() OR app_is_org_admin())"

# Per kind of table: (USING, WITH CHECK). Superadmins see every tenant (platform operations).
POLICIES: dict[str, tuple[str, str]] = {
    "org": (f"{_IN_ORG} OR app_is_superadmin()", f"{_IN_ORG} OR app_is_superadmin()"),
    "user": (
        f"({_IN_ORG} AND {_OWN_OR_ADMIN}) OR app_is_superadmin()",
        f"({_IN_ORG} AND {_OWN_OR_ADMIN}) OR app_is_superadmin()",
    ),
    "user_optional": (
        f"({_IN_ORG} AND (user_id IS NULL OR {_OWN_OR_ADMIN})) OR app_is_superadmin()",
        f"({_IN_ORG} AND ((user_id IS NULL AND app_is_org_admin()) OR user_id = app_user_id()))"
        " OR app_is_superadmin()",
    ),
    # Global prompts are read by every tenant and written only by superadmins.
    "prompt": (
        f"(org_id IS NULL AND app_org_id() IS NOT NULL) OR ({_IN_ORG} AND (user_id IS NULL OR {_OWN_OR_ADMIN}))"
        " OR app_is_superadmin()",
        f"({_IN_ORG} AND ((user_id IS NULL AND app_is_org_admin()) OR user_id = app_user_id()))"
        " OR app_is_superadmin()",
    ),
    # Users are global; a tenant sees itself and the members of its organization.
    "users": (
        "id = app_user_id() OR app_is_superadmin() OR EXISTS (SELECT 1 FROM memberships m"
        " WHERE m.user_id = users.id AND m.org_id = app_org_id())",
        "id = app_user_id() OR app_is_superadmin()",
    ),
}
# The organizations table is keyed by its own id.
ORGANIZATION_POLICY = ("id = app_org_id() OR app_is_superadmin()", "app_is_superadmin()")


def policy_statements(tables: Iterable[str] | None = None, platform_role: str | None = None) -> list[str]:
    """The helper functions and each table's policy (every tenant table unless ``tables`` is given:
    a migration names the tables that exist at its revision)."""
    statements = [*HELPERS, superadmin_function(platform_role)]
    for table in TENANT_TABLES if tables is None else tables:
        kind = TENANT_TABLES[table]
        using, check = ORGANIZATION_POLICY if table == "organizations" else POLICIES[kind]
        statements += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"DROP POLICY IF EXISTS tenant_isolation ON {table}",
            f"CREATE POLICY tenant_isolation ON {table} USING ({using}) WITH CHECK ({check})",
        ]
    return statements


def force_statements(tables: Iterable[str]) -> list[str]:
    """RLS for the tables' owner too: without FORCE, a process connected as the owner (a
    misconfigured ``DATABASE_URL``) reads every tenant. Superusers and BYPASSRLS roles are still
    exempt, which ``serve`` refuses in production (schemas.db.rls_bypass_reason)."""
    return [f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY" for table in tables]


def grant_statements(role: str, tables: Iterable[str] | None = None) -> list[str]:
    """The service role may read and write tenant tables, but never rewrite the audit trail."""
    writable = ", ".join(
        table for table in (TENANT_TABLES if tables is None else tables) if table != "audit_logs"
    )
    return [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {writable} TO {role}",
        f"GRANT SELECT, INSERT ON audit_logs TO {role}",
        f"GRANT EXECUTE ON FUNCTION app_org_id(), app_user_id(), app_role(), app_is_superadmin(),"
        f" app_is_org_admin() TO {role}",
    ]


def create_role_statement(role: str, password: str | None) -> str:
    """Idempotent: roles are cluster-wide and may already exist from another database."""
    password_clause = f" PASSWORD {_literal(password)}" if password else ""
    return f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {_literal(role)}) THEN
    CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE{password_clause};
  ELSE
    ALTER ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS{password_clause};
  END IF;
END
$$"""


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def platform_statements(
    platform_role: str, password: str | None, tables: Iterable[str] | None = None
) -> list[str]:
    """The platform role (its own login, held by Row-Level Security like the service role, with the
    same grants), the migrating owner made a member of it, and ``app_is_superadmin()`` bound to it."""
    return [
        create_role_statement(platform_role, password),
        f"""
DO $$
BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE format('GRANT %I TO %I', {_literal(platform_role)}, current_user);
  END IF;
END
$$""",
        *grant_statements(platform_role, tables),
        superadmin_function(platform_role),
    ]


def reference_sql(role: str = "agentapi_app", platform_role: str = "agentapi_platform") -> str:
    """What infra/sql/rls.sql holds: the migrations' statements, for review and for DBAs."""
    header = "-- Generated from schemas/rls.py (python -m schemas.rls); the migration applies the same.\n"
    body = [
        create_role_statement(role, None),
        *policy_statements(platform_role=platform_role),
        *force_statements(TENANT_TABLES),
        *grant_statements(role),
        *platform_statements(platform_role, None),
    ]
    return header + ";\n\n".join(statement.strip() for statement in body) + ";\n"


if __name__ == "__main__":
    print(reference_sql(), end="")
