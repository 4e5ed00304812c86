"""federation tables

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from computenet.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the federation tables."""
    op.create_table(
        "fed_children",
        sa.Column("code", sa.String(length=140), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("enrolled_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("silent", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_table(
        "fed_pools",
        sa.Column("cpi", sa.String(length=256), nullable=False),
        sa.Column("owner", sa.String(length=140), nullable=False),
        sa.Column("via", sa.String(length=140), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("health", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cpi"),
    )
    op.create_index("ix_fed_pools_owner", "fed_pools", ["owner"])
    op.create_index("ix_fed_pools_via", "fed_pools", ["via"])
    op.create_index("ix_fed_pools_seq", "fed_pools", ["seq"])
    op.create_table(
        "fed_forwards",
        sa.Column("task_id", sa.String(length=96), nullable=False),
        sa.Column("target", sa.String(length=140), nullable=False),
        sa.Column("target_url", sa.String(length=512), nullable=False),
        sa.Column("pool_cpi", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("events_seen", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index("ix_fed_forwards_target", "fed_forwards", ["target"])
    op.create_index("ix_fed_forwards_state", "fed_forwards", ["state"])
    op.create_table(
        "fed_inbound",
        sa.Column("task_id", sa.String(length=96), nullable=False),
        sa.Column("origin", sa.String(length=140), nullable=False),
        sa.Column("origin_url", sa.String(length=512), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index("ix_fed_inbound_state", "fed_inbound", ["state"])
    op.create_table(
        "fed_usage",
        sa.Column("task_id", sa.String(length=96), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("signer", sa.String(length=140), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "attempt"),
    )


def downgrade() -> None:
    """Drop the federation tables."""
    for table in ("fed_usage", "fed_inbound", "fed_forwards", "fed_pools", "fed_children"):
        op.drop_table(table)
