"""monitoring tables

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import computenet.store.tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, computenet.store.tables.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create the monitoring tables."""
    op.create_table(
        "mon_pool_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pool_cpi", sa.String(length=256), nullable=False),
        sa.Column("provider_prefix", sa.String(length=128), nullable=False),
        _at("at"),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.Column("heartbeat_age_s", sa.Float(), nullable=True),
        sa.Column("running_tasks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_mon_pool_samples_pool_at", "mon_pool_samples", ["pool_cpi", "at"])
    op.create_index("ix_mon_pool_samples_at", "mon_pool_samples", ["at"])
    op.create_table(
        "mon_task_timings",
        sa.Column("task_id", sa.String(length=96), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=False),
        sa.Column("queue_wait_estimate_s", sa.Float(), nullable=True),
        _at("first_log_at", nullable=True),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_table(
        "mon_rtt_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("gateway_id", sa.String(length=32), nullable=False),
        sa.Column("from_region", sa.String(length=8), nullable=False),
        sa.Column("to_region", sa.String(length=8), nullable=False),
        _at("at"),
        sa.Column("rtt_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_mon_rtt_samples_at", "mon_rtt_samples", ["at"])


def downgrade() -> None:
    """Drop the monitoring tables."""
    op.drop_index("ix_mon_rtt_samples_at", table_name="mon_rtt_samples")
    op.drop_table("mon_rtt_samples")
    op.drop_table("mon_task_timings")
    op.drop_index("ix_mon_pool_samples_at", table_name="mon_pool_samples")
    op.drop_index("ix_mon_pool_samples_pool_at", table_name="mon_pool_samples")
    op.drop_table("mon_pool_samples")
