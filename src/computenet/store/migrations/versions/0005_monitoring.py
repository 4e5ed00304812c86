"""monitoring tables

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the monitoring tables (filled in by the work on that area)."""


def downgrade() -> None:
    """Drop the monitoring tables."""
