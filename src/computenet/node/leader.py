"""One scheduler at a time among node replicas that share a store.

On PostgreSQL the leader is whoever holds a session-level advisory lock on a connection kept
open for that purpose. PostgreSQL drops the lock the moment that connection ends, so when the
leader process dies (even by ``kill -9``) another replica's next try takes it. On SQLite a node
is the only writer to its file, so it is always the leader.
"""

from __future__ import annotations

import logging
import zlib

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from computenet.store.db import Database

log = logging.getLogger("computenet.node.leader")


def lock_key(node_code: str) -> int:
    """The advisory lock's key: one per node code, so two nodes may share a server."""
    return zlib.crc32(f"computenet-scheduler:{node_code}".encode())


class LeaderElection:
    """Try to become, or stay, the scheduler leader; call ``check`` every few seconds."""

    def __init__(self, db: Database, node_code: str) -> None:
        self._db = db
        self._key = lock_key(node_code)
        self._conn: Connection | None = None
        self.is_leader = db.is_sqlite

    def check(self) -> bool:
        """Take the lock if free, confirm it is still held if ours; return leadership."""
        if self._db.is_sqlite:
            return True
        try:
            if self._conn is None:
                self._conn = self._db.engine.connect()
                # Autocommit: the lock belongs to the session, not to a transaction, and an
                # idle-in-transaction connection would hold back vacuum for hours.
                self._conn = self._conn.execution_options(isolation_level="AUTOCOMMIT")
            if self.is_leader:
                self._conn.execute(text("SELECT 1"))  # the lock lives while this session does
            else:
                got = self._conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
                ).scalar_one()
                if got:
                    log.info("became the scheduler leader")
                self.is_leader = bool(got)
        except DBAPIError:
            if self.is_leader:
                log.warning("lost the connection holding the scheduler lock; standing down")
            self._drop()
        return self.is_leader

    def release(self) -> None:
        """Give up leadership (at shutdown) so another replica takes over at once."""
        self._drop()

    def _drop(self) -> None:
        self.is_leader = self._db.is_sqlite
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # closing the session releases a session-level advisory lock
            except DBAPIError:
                conn.invalidate()
