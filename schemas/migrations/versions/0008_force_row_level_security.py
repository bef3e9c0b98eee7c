"""FORCE ROW LEVEL SECURITY on every tenant table, so the tables' owner is held by the policies too

Revision ID: 0008
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

from schemas.rls import force_statements

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The tenant tables at this revision (a later table's own migration forces it).
TABLES = (
    "organizations",
    "memberships",
    "user_sessions",
    "session_messages",
    "session_workspaces",
    "mcp_configurations",
    "mcp_oauth_tokens",
    "system_prompts",
    "tenant_settings",
    "webhooks",
    "webhook_deliveries",
    "audit_logs",
    "users",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in force_statements(TABLES):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
