"""webhook_deliveries: outbound webhook notifications, their attempts and dead letters (with RLS)

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from schemas.rls import grant_statements, policy_statements

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "webhook_deliveries"


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.create_table(
        TABLE,
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("org_id", sa.Uuid(), sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("webhook_id", sa.Uuid(), sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", json_type, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("webhook_id", "event_id"),
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status_allowed"),
    )
    op.create_index(f"ix_{TABLE}_org_id", TABLE, ["org_id"])
    op.create_index(f"ix_{TABLE}_webhook_id", TABLE, ["webhook_id"])
    op.create_index(f"ix_{TABLE}_status", TABLE, ["status"])
    if op.get_bind().dialect.name == "postgresql":
        config = op.get_context().config
        assert config is not None, "migrations run through schemas.migrate, which passes the settings"
        settings = config.attributes["settings"]
        for statement in [*policy_statements([TABLE]), *grant_statements(settings.db_service_role, [TABLE])]:
            op.execute(statement)


def downgrade() -> None:
    op.drop_table(TABLE)
