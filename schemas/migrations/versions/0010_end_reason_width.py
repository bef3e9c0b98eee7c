"""user_sessions.end_reason widened to 1024: an agent's error text was cut at 64 characters

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_sessions") as table:
        table.alter_column("end_reason", type_=sa.String(1024), existing_nullable=True)


def downgrade() -> None:
    # Longer reasons are cut to fit the old width rather than failing the downgrade.
    op.execute(
        "UPDATE user_sessions SET end_reason = substr(end_reason, 1, 64) WHERE length(end_reason) > 64"
    )
    with op.batch_alter_table("user_sessions") as table:
        table.alter_column("end_reason", type_=sa.String(64), existing_nullable=True)
