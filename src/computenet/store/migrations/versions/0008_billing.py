"""billing

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import computenet.store.tables
import computenet.store.tables_billing

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Price books, charges, budgets; tasks learn who pays and their most possible charge."""
    op.create_table(
        "budgets",
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("monthly_limit", computenet.store.tables.ExactDecimal(length=48), nullable=False),
        sa.Column("warn_fraction", computenet.store.tables.ExactDecimal(length=48), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("spent", computenet.store.tables_billing.ExactAmount(length=48), nullable=False),
        sa.Column("updated_at", computenet.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    op.create_table(
        "charges",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.String(length=96), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.Column("pool_cpi", sa.String(length=256), nullable=False),
        sa.Column("provider_prefix", sa.String(length=128), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("quantity", computenet.store.tables.ExactDecimal(length=48), nullable=False),
        sa.Column("unit_price", computenet.store.tables.ExactDecimal(length=48), nullable=False),
        sa.Column("price_entry_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", computenet.store.tables_billing.ExactAmount(length=48), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("created_at", computenet.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "attempt", name="uq_charges_task_attempt"),
    )
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.create_index(
            "ix_charges_provider_period", ["provider_prefix", "period"], unique=False
        )
        batch_op.create_index("ix_charges_tenant_period", ["tenant", "period"], unique=False)

    op.create_table(
        "price_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("scope", sa.String(length=256), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("price", computenet.store.tables.ExactDecimal(length=48), nullable=False),
        sa.Column(
            "effective_from", computenet.store.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("created_at", computenet.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("price_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_price_entries_scope", ["scope", "tier", "effective_from"], unique=False
        )

    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("max_charge", computenet.store.tables.ExactDecimal(length=48), nullable=True)
        )


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("max_charge")
        batch_op.drop_column("tenant")

    with op.batch_alter_table("price_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_price_entries_scope")

    op.drop_table("price_entries")
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.drop_index("ix_charges_tenant_period")
        batch_op.drop_index("ix_charges_provider_period")

    op.drop_table("charges")
    op.drop_table("budgets")
