"""tokens: tenant, scopes, name

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Give tokens an organisation, scopes and a label; existing tokens keep their role's
    scopes (NULL scopes)."""
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("tenant", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("scopes", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("name", sa.String(length=128), nullable=True))


def downgrade() -> None:
    """Drop the columns again."""
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("name")
        batch.drop_column("scopes")
        batch.drop_column("tenant")
