"""services

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import computenet.store.tables

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_AT = computenet.store.tables.UTCDateTime


def upgrade() -> None:
    """Inference services, the replica tasks made for them, and their API keys."""
    op.create_table(
        "services",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("home_node", sa.String(length=140), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.Column("tenant", sa.String(length=256), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("min_replicas", sa.Integer(), nullable=False),
        sa.Column("max_replicas", sa.Integer(), nullable=False),
        sa.Column("desired", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", _AT(timezone=True), nullable=False),
        sa.Column("updated_at", _AT(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_services_owner", "services", ["owner"])
    op.create_table(
        "service_replicas",
        sa.Column("task_id", sa.String(length=96), nullable=False),
        sa.Column("service", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("replica", sa.Integer(), nullable=False),
        sa.Column("live", sa.Integer(), nullable=False),
        sa.Column("created_at", _AT(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index("ix_service_replicas_service_live", "service_replicas", ["service", "live"])
    op.create_table(
        "service_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("service", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _AT(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index("ix_service_keys_service", "service_keys", ["service"])


def downgrade() -> None:
    """Drop them (services and keys are lost; their replica tasks stay as tasks)."""
    op.drop_table("service_keys")
    op.drop_table("service_replicas")
    op.drop_table("services")
