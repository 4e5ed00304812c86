"""interim usage of service replicas

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import computenet.store.tables

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_AT = computenet.store.tables.UTCDateTime
_QTY = computenet.store.tables.ExactDecimal


def upgrade() -> None:
    """Running replicas accrue per interval: interim usage rows, and a charge per interval."""
    op.create_table(
        "interim_usage",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.String(length=96), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("interval_index", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("pool_cpi", sa.String(length=256), nullable=False),
        sa.Column("accelerator_model", sa.String(length=64), nullable=True),
        sa.Column("cards", sa.Integer(), nullable=False),
        sa.Column("wall_s", _QTY(length=48), nullable=False),
        sa.Column("card_hours", _QTY(length=48), nullable=False),
        sa.Column("cpu_core_hours", _QTY(length=48), nullable=False),
        sa.Column("pflops_hours_fp16", _QTY(length=48), nullable=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("created_at", _AT(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "task_id", "attempt", "interval_index", name="uq_interim_usage_interval"
        ),
    )
    op.create_index("ix_interim_usage_tenant_period", "interim_usage", ["tenant", "period"])
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("interval_index", sa.Integer(), server_default="-1", nullable=False)
        )
        batch_op.drop_constraint("uq_charges_task_attempt", type_="unique")
        batch_op.create_unique_constraint(
            "uq_charges_task_attempt", ["task_id", "attempt", "interval_index"]
        )


def downgrade() -> None:
    """Interim charges are folded away with their rows: only closing charges remain."""
    op.execute("DELETE FROM charges WHERE interval_index <> -1")
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.drop_constraint("uq_charges_task_attempt", type_="unique")
        batch_op.create_unique_constraint("uq_charges_task_attempt", ["task_id", "attempt"])
        batch_op.drop_column("interval_index")
    op.drop_index("ix_interim_usage_tenant_period", table_name="interim_usage")
    op.drop_table("interim_usage")
