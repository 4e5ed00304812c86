"""The audit table is append-only on both stores: the migration's triggers refuse edits."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from computenet.store.db import Database, sqlite_url
from computenet.store.migrate import upgrade
from computenet.store.tables_audit import AuditEvent
from pg import fresh_database, require_postgres


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_audit_rows_cannot_be_changed_or_removed(backend: str, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path) if backend == "sqlite" else fresh_database(require_postgres())
    db = Database(url)
    try:
        upgrade(db)
        with db.write() as s:
            s.add(
                AuditEvent(
                    at=datetime.now(UTC),
                    actor="admin:admin",
                    method="POST",
                    path="/api/v1/tasks",
                    status=201,
                    client="127.0.0.1:1",
                )
            )
        for statement in ("UPDATE audit_events SET status = 200", "DELETE FROM audit_events"):
            with pytest.raises(DBAPIError, match="append-only"), db.write() as s:
                s.execute(text(statement))
        with db.read() as s:
            assert s.execute(text("SELECT status FROM audit_events")).scalars().all() == [201]
    finally:
        db.dispose()
