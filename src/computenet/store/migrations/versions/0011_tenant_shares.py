"""tenant fair-share settings

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import computenet.store.tables

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Each tenant's fair-share weight and quota."""
    op.create_table(
        "tenant_shares",
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("quota_cards", sa.Float(), nullable=True),
        sa.Column("updated_at", computenet.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )


def downgrade() -> None:
    """Drop them: every tenant is back to weight 1 and no quota."""
    op.drop_table("tenant_shares")
