"""advance reservations

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import computenet.store.tables
import computenet.store.tables_billing

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Reservations, and the reservation a task's attempt was placed on."""
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.Column("pool_cpi", sa.String(length=256), nullable=False),
        sa.Column("provider_prefix", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("cards", sa.Integer(), nullable=False),
        sa.Column("starts_at", computenet.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", computenet.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("unit_price", computenet.store.tables.ExactDecimal(length=48), nullable=False),
        sa.Column("price_entry_id", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "max_charge", computenet.store.tables_billing.ExactAmount(length=48), nullable=False
        ),
        sa.Column("created_at", computenet.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index("ix_reservations_pool", ["pool_cpi", "ends_at"], unique=False)
        batch_op.create_index("ix_reservations_tenant", ["tenant", "state"], unique=False)
        batch_op.create_index("ix_reservations_state", ["state", "ends_at"], unique=False)

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reservation_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("reservation_id")
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index("ix_reservations_state")
        batch_op.drop_index("ix_reservations_tenant")
        batch_op.drop_index("ix_reservations_pool")
    op.drop_table("reservations")
