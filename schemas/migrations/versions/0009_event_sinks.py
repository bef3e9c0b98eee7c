"""event sinks: webhooks of direction 'sink' (a broker URL, exchange, routing key, health), an opt-in
CloudEvents format for outbound webhooks, and a session position on deliveries for ordered publishing

Revision ID: 0009
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("format", sa.String(16), nullable=False, server_default="native"))
        batch.add_column(sa.Column("exchange", sa.String(255), nullable=True))
        batch.add_column(sa.Column("routing_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("health", sa.String(8), nullable=False, server_default="ok"))
        batch.add_column(sa.Column("last_error", sa.String(1000), nullable=True))
        batch.drop_constraint("direction_allowed", type_="check")
        batch.create_check_constraint("direction_allowed", "direction IN ('inbound', 'outbound', 'sink')")
        batch.create_check_constraint("format_allowed", "format IN ('native', 'cloudevents')")
        batch.create_check_constraint("health_allowed", "health IN ('ok', 'failing')")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("session_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("position", sa.String(40), nullable=False, server_default=""))
        batch.create_index("ix_webhook_deliveries_session_id", ["session_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # The owner is held by the row policies too (0008): act as the platform to see every org's sinks.
        op.execute("SELECT set_config('app.role', 'superadmin', true)")
    # Sinks cannot exist before this revision (their deliveries go with them, by the foreign key).
    op.execute("DELETE FROM webhooks WHERE direction = 'sink'")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_index("ix_webhook_deliveries_session_id")
        batch.drop_column("position")
        batch.drop_column("session_id")
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_constraint("health_allowed", type_="check")
        batch.drop_constraint("format_allowed", type_="check")
        batch.drop_constraint("direction_allowed", type_="check")
        batch.create_check_constraint("direction_allowed", "direction IN ('inbound', 'outbound')")
        for column in ("last_error", "health", "routing_key", "exchange", "format"):
            batch.drop_column(column)
