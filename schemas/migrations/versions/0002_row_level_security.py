"""service role and row-level security (PostgreSQL only)

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

from schemas.rls import create_role_statement, grant_statements, policy_statements
from schemas.tables import TENANT_TABLES

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Tenant tables later revisions create, with their own policies.
LATER_TABLES = ("webhook_deliveries",)


def _settings():
    return op.get_context().config.attributes["settings"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    settings = _settings()
    password = settings.db_service_password.get_secret_value() if settings.db_service_password else None
    op.execute(create_role_statement(settings.db_service_role, password))
    tables = [table for table in TENANT_TABLES if table not in LATER_TABLES]
    for statement in [*policy_statements(tables), *grant_statements(settings.db_service_role, tables)]:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TENANT_TABLES:
        if table in LATER_TABLES:
            continue
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {_settings().db_service_role}")
