"""data tables

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the data tables (filled in by the work on that area)."""


def downgrade() -> None:
    """Drop the data tables."""
