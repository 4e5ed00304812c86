"""The audit log: every state-changing call, who made it, when, from where, how it ended.

Requests are recorded by an ASGI middleware after they are answered and written in batches
by one thread, so auditing adds no store write to the request's own path. The price is
that a node killed with ``kill -9`` loses at most the last ``flush_s`` of audit rows; a
clean stop writes everything. The table refuses UPDATE and DELETE (store triggers).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from starlette.types import ASGIApp, Receive, Scope, Send

from computenet.node.auth import Principal
from computenet.node.http_errors import StatusWatch
from computenet.store.db import Database
from computenet.store.tables_audit import AuditEvent

log = logging.getLogger("computenet.audit")
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Requests to services change nothing on the node (they are counted by the metric plane):
# an inference POST per row would fill the audit log with traffic.
_NOT_AUDITED = "/services/v1/"
_MAX_PENDING = 50_000  # beyond this the writer has fallen far behind: drop, and say so


@dataclass(frozen=True)
class AuditQuery:
    """Filters for reading the log back; ``after_id`` pages forward, or with
    ``newest_first`` ``before_id`` pages back from the newest row."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    path_prefix: str | None = None
    after_id: int = 0
    limit: int = 100
    newest_first: bool = False
    before_id: int | None = None


class AuditLog:
    """Collects audit rows and writes them in batches from a background thread."""

    def __init__(self, db: Database, flush_s: float = 0.2) -> None:
        self._db = db
        self._flush_s = flush_s
        self._pending: list[AuditEvent] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is pending and stop the writer."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def record(self, event: AuditEvent) -> None:
        """Queue one row; it reaches the store within ``flush_s``."""
        with self._lock:
            if len(self._pending) >= _MAX_PENDING:
                self.dropped += 1
                return
            self._pending.append(event)

    def flush(self) -> None:
        """Write every queued row now, in one transaction. One flush at a time: a caller
        that finds the writer thread mid-batch returns only once that batch is stored too."""
        with self._flushing:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                with self._db.write() as s:
                    s.add_all(batch)
            except Exception:
                log.exception(
                    "could not write %d audit rows; keeping them for the next try", len(batch)
                )
                with self._lock:
                    self._pending[:0] = batch

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._flush_s)
            self._wake.clear()
            self.flush()

    def query(self, q: AuditQuery) -> list[AuditEvent]:
        """Rows matching ``q``, oldest first (newest first when ``q.newest_first``)."""
        stmt = select(AuditEvent).where(AuditEvent.id > q.after_id)
        if q.before_id is not None:
            stmt = stmt.where(AuditEvent.id < q.before_id)
        if q.since is not None:
            stmt = stmt.where(AuditEvent.at >= q.since)
        if q.until is not None:
            stmt = stmt.where(AuditEvent.at < q.until)
        if q.actor is not None:
            stmt = stmt.where(AuditEvent.actor == q.actor)
        if q.path_prefix is not None:
            stmt = stmt.where(AuditEvent.path.startswith(q.path_prefix, autoescape=True))
        with self._db.read() as s:
            order = AuditEvent.id.desc() if q.newest_first else AuditEvent.id
            return list(s.scalars(stmt.order_by(order).limit(q.limit)))


def as_dict(e: AuditEvent) -> dict[str, object]:
    """One audit row as plain JSON-ready data."""
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "actor": e.actor,
        "token_id": e.token_id,
        "method": e.method,
        "path": e.path,
        "status": e.status,
        "client": e.client,
        "request_id": e.request_id,
    }


def as_jsonl(events: list[AuditEvent]) -> Iterator[str]:
    """JSON lines, one per row, for export."""
    for e in events:
        yield json.dumps(as_dict(e), separators=(",", ":")) + "\n"


class AuditMiddleware:
    """Records every state-changing HTTP call once it has been answered."""

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _STATE_CHANGING
            or scope["path"].startswith(_NOT_AUDITED)
        ):
            await self.app(scope, receive, send)
            return
        watch = StatusWatch(send)
        try:
            await self.app(scope, receive, watch.send)
        finally:
            self.audit.record(_event(scope, watch.status))


def _actor(who: Principal) -> str:
    """``role:subject``, with the tenant when there is one (``user:acme/bob``): a user name
    alone would not say which of two tenants' users acted."""
    name = who.subject if who.tenant is None else f"{who.tenant}/{who.subject}"
    return f"{who.kind}:{name}"


def _event(scope: Scope, status: int) -> AuditEvent:
    who = scope.get("state", {}).get("principal")
    headers = dict(scope.get("headers", []))
    request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or None
    client = scope.get("client")
    return AuditEvent(
        at=datetime.now(UTC),
        actor=_actor(who) if isinstance(who, Principal) else "anonymous",
        token_id=who.token_id if isinstance(who, Principal) else None,
        method=scope["method"],
        path=str(scope.get("path", ""))[:1024],
        status=status,
        client=f"{client[0]}:{client[1]}"[:64] if client else "unknown",
        request_id=request_id,
    )
