"""Database engines: SQLite in WAL mode by default, PostgreSQL by URL.

SQLite allows one writer at a time, so writes in this process take a lock and open with
``BEGIN IMMEDIATE``; that turns lock upgrades (which SQLite answers with "database is
locked") into an orderly queue. PostgreSQL needs neither.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from computenet.errors import InvalidInput

log = logging.getLogger("computenet.store")


def sqlite_url(data_dir: Path) -> str:
    """The URL of the node's embedded SQLite database inside ``data_dir``."""
    return f"sqlite:///{(data_dir / 'computenet.db').resolve()}"


class Database:
    """One engine and its sessions, with a write transaction helper."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        try:
            parsed: URL = make_url(url)
        except Exception as exc:
            raise InvalidInput(f"database URL {url!r} is not valid: {exc}") from None
        self.url = parsed
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 16
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(parsed, **kwargs)
        if self.is_sqlite:
            self._setup_sqlite(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            self.engine.execution_options(begin_immediate=True), expire_on_commit=False
        )
        self._write_lock = threading.Lock() if self.is_sqlite else None
        # Called with a write session's ``info`` once it has committed (outside the write
        # lock): what the transaction noted there (tasks that moved) wakes whoever waits.
        self.after_commit: list[Callable[[dict[str, Any]], None]] = []

    @staticmethod
    def _setup_sqlite(engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL + synchronous=FULL: a commit survives a crash of the process and the OS.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("begin_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads only."""
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        lock = self._write_lock or nullcontext()
        with self._write_sessions() as session:
            with lock, session.begin():
                yield session
            if session.info:
                for hook in self.after_commit:
                    try:
                        hook(session.info)
                    except Exception:
                        # The write has committed: a caller must not take it for failed.
                        log.exception("after-commit hook failed")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
