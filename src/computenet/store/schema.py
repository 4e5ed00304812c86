"""The whole schema: the core tables plus each area's tables, registered on one metadata.

Alembic and the schema tests import this module so that every table is known.
"""

from __future__ import annotations

from computenet.store import (
    tables,
    tables_audit,
    tables_billing,
    tables_data,
    tables_federation,
    tables_monitoring,
    tables_sched,
    tables_secrets,
    tables_services,
)

Base = tables.Base

__all__ = [
    "Base",
    "tables_audit",
    "tables_billing",
    "tables_data",
    "tables_federation",
    "tables_monitoring",
    "tables_sched",
    "tables_secrets",
    "tables_services",
]
