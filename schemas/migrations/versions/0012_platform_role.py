"""The platform role: cross-organization reads and writes only on its own connection

Until now a transaction with ``app.role=superadmin`` crossed organizations whatever role ran it, so
the service role could grant itself every tenant by setting a variable. From here the RLS helper
``app_is_superadmin()`` also asks that the connection's role be a member of the platform role
(``AGENTAPI_DB_PLATFORM_ROLE``, created here with ``AGENTAPI_DB_PLATFORM_PASSWORD``), and the
processes reach it through ``AGENTAPI_PLATFORM_DATABASE_URL``.

Revision ID: 0012
Revises: 0010
"""

from collections.abc import Sequence

from alembic import op

from schemas.rls import platform_statements, superadmin_function

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# The tenant tables at this revision (later ones grant the platform role themselves).
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


def _settings():
    return op.get_context().config.attributes["settings"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    settings = _settings()
    password = settings.db_platform_password.get_secret_value() if settings.db_platform_password else None
    for statement in platform_statements(settings.db_platform_role, password, TABLES):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    settings = _settings()
    op.execute(superadmin_function(None))
    # The role itself stays: roles are cluster-wide and other databases may use it.
    op.execute(f"REVOKE ALL ON {', '.join(TABLES)} FROM {settings.db_platform_role}")
