"""mcp_oauth_tokens.client and encrypted_client_secret: each grant carries the client and endpoints
it was issued to, so refresh and revocation work whatever later happens to the configuration

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    op.add_column(
        "mcp_oauth_tokens", sa.Column("client", json_type, nullable=False, server_default=sa.text("'{}'"))
    )
    op.add_column("mcp_oauth_tokens", sa.Column("encrypted_client_secret", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mcp_oauth_tokens") as batch:
        batch.drop_column("encrypted_client_secret")
        batch.drop_column("client")
