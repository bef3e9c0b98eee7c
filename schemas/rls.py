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
    """CREATE OR REPLACE FUNCTION app_is_superadmin() RETURNS boolean LANGUAGE sql STABLE AS
  $$ SELECT app_role() = 'superadmin' $$""",
    """CREATE OR REPLACE FUNCTION app_is_org_admin() RETURNS boolean LANGUAGE sql STABLE AS
  $$ SELECT app_role() IN ('admin', 'owner', 'superadmin') $$""",
]

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


def policy_statements(tables: Iterable[str] | None = None) -> list[str]:
    """The helper functions and each table's policy (every tenant table unless ``tables`` is given:
    a migration names the tables that exist at its revision)."""
    statements = list(HELPERS)
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


def reference_sql(role: str = "agentapi_app") -> str:
    """What infra/sql/rls.sql holds: the migration's statements, for review and for DBAs."""
    header = "-- Generated from schemas/rls.py (python -m schemas.rls); the migration applies the same.\n"
    body = [
        create_role_statement(role, None),
        *policy_statements(),
        *force_statements(TENANT_TABLES),
        *grant_statements(role),
    ]
    return header + ";\n\n".join(statement.strip() for statement in body) + ";\n"


if __name__ == "__main__":
    print(reference_sql(), end="")
