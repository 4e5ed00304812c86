"""The pool index: this node's own pools, its subtree's (pushed up by children) and the rest of
the federation (pulled from the parent). Every change takes the next value of one counter, so
deltas up and pages down are "everything after seq N".
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from computenet.errors import InvalidInput
from computenet.federation.keys import OutsidePrefix
from computenet.model.cpi import CPI, node_code_within
from computenet.model.pool import Capacity, PoolHealth, PoolSpec
from computenet.sched.core import PoolView
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_federation import FedPool
from computenet.tasks.capacity import held_capacity
from computenet.tasks.clock import utcnow

UNAVAILABLE = "unavailable"
PAGE_ROWS = 5000


def pool_record(row: t.Pool, owner: str, url: str, free: Capacity | None = None) -> dict[str, Any]:
    """The federation record of a local pool: description, live state (with its free
    capacity when known) and access path."""
    rec = {
        "cpi": row.cpi,
        "node": owner,
        "provider": row.provider_prefix,
        "served_by_url": url,
        "health": row.health,
        "running_tasks": row.running_tasks,
        "version": row.version,
        "spec": row.spec,
    }
    if free is not None:
        rec["free"] = free.model_dump()
    return rec


class PoolIndex:
    """Reads and writes the ``fed_pools`` table for one node."""

    def __init__(self, db: Database, code: str, url: str) -> None:
        self.db = db
        self.code = code
        self.url = url
        self._lock = threading.Lock()
        self._seq: int | None = None
        # Parsed remote records (by change number) and own pool descriptions (by version).
        self._specs: dict[str, tuple[int, PoolSpec, Capacity]] = {}
        self._own_specs: dict[str, tuple[int, PoolSpec]] = {}
        self.on_change: list[Any] = []  # callables taking the changed CPIs

    def next_seq(self, s: Session) -> int:
        """The next change number (call inside a write transaction)."""
        with self._lock:
            if self._seq is None:
                self._seq = int(s.scalar(select(func.max(FedPool.seq))) or 0)
            self._seq += 1
            return self._seq

    def _changed(self, cpis: list[str]) -> None:
        if cpis:
            for callback in self.on_change:
                callback(cpis)

    def _upsert(
        self, s: Session, rec: dict[str, Any], via: str, now: datetime, health: str | None = None
    ) -> bool:
        """Store one record if it differs from what is held; True when it changed."""
        row = s.get(FedPool, rec["cpi"])
        state = health or str(rec.get("health", PoolHealth.HEALTHY.value))
        if row is not None and row.record == rec and row.via == via and row.health == state:
            return False
        seq = self.next_seq(s)  # before adding a row: the first call reads the table
        if row is None:
            row = FedPool(cpi=rec["cpi"])
            s.add(row)
        row.owner = str(rec["node"])
        row.via = via
        row.url = str(rec.get("served_by_url", ""))
        row.record = rec
        row.health = state
        row.seq = seq
        row.updated_at = now
        return True

    def refresh_own(self) -> int:
        """Copy this node's own pools into the index where they changed; return how many."""
        now = utcnow()
        with self.db.read() as s:
            pools = list(s.scalars(select(t.Pool)))
            used = held_capacity(s) if pools else {}
            held = {
                r.cpi: r.record for r in s.scalars(select(FedPool).where(FedPool.via == self.code))
            }
        fresh = [pool_record(p, self.code, self.url, self._free(p, used.get(p.cpi))) for p in pools]
        stale = [r for r in fresh if held.get(r["cpi"]) != r]
        if not stale:
            return 0
        with self.db.write() as s:
            changed = [r["cpi"] for r in stale if self._upsert(s, r, self.code, now)]
        self._changed(changed)
        return len(changed)

    def _free(self, row: t.Pool, used: Capacity | None) -> Capacity:
        spec = self._spec(row.cpi, row.version, row.spec)
        return spec.total().minus(used or Capacity())

    def _spec(self, cpi: str, version: int, raw: dict[str, Any]) -> PoolSpec:
        """A pool description, parsed once per version."""
        cached = self._own_specs.get(cpi)
        if cached is None or cached[0] != version:
            cached = self._own_specs[cpi] = (version, PoolSpec.model_validate(raw))
        return cached[1]

    def apply(self, via: str, records: Iterable[dict[str, Any]], full: bool) -> int:
        """Store records learned from ``via`` (a child pushing up, or the parent paging down).

        A child may only speak for pools inside its own code; one record outside it refuses
        the whole delta. With ``full``, rows from ``via`` missing from ``records`` are dropped.
        """
        now = utcnow()
        recs = list(records)
        for rec in recs:
            cpi = CPI.parse(str(rec.get("cpi", "")))
            if str(rec.get("node")) != cpi.node:
                raise InvalidInput(f"record {cpi} names node {rec.get('node')!r}")
        changed: list[str] = []
        with self.db.write() as s:
            for rec in recs:
                changed += [rec["cpi"]] if self._upsert(s, rec, via, now) else []
            if full:
                keep = {r["cpi"] for r in recs}
                for row in s.scalars(select(FedPool).where(FedPool.via == via)):
                    if row.cpi not in keep:
                        s.delete(row)
                        changed.append(row.cpi)
        self._changed(changed)
        return len(changed)

    def check_within(self, sender: str, records: Iterable[dict[str, Any]]) -> None:
        """Refuse records for pools outside ``sender``'s prefix (a child lying about its code)."""
        for rec in records:
            node = CPI.parse(str(rec.get("cpi", ""))).node
            if not node_code_within(node, sender):
                raise OutsidePrefix(
                    f"node {sender} may not publish {rec.get('cpi')}: outside its prefix"
                )

    def mark_unavailable(self, via: str) -> int:
        """Mark every pool learned from ``via`` unavailable (it went silent)."""
        with self.db.write() as s:
            rows = list(
                s.scalars(select(FedPool).where(FedPool.via == via, FedPool.health != UNAVAILABLE))
            )
            for row in rows:
                row.health = UNAVAILABLE
                row.seq = self.next_seq(s)
                row.updated_at = utcnow()
        self._changed([r.cpi for r in rows])
        return len(rows)

    def subtree_after(self, after: int) -> tuple[list[dict[str, Any]], int]:
        """Records of this node's subtree changed after ``after``, and the newest seq."""
        with self.db.read() as s:
            rows = list(
                s.execute(
                    select(FedPool.record, FedPool.health, FedPool.seq, FedPool.owner)
                    .where(FedPool.seq > after)
                    .order_by(FedPool.seq)
                )
            )
        mine = [r for r in rows if node_code_within(r.owner, self.code)]
        upto = rows[-1].seq if rows else after
        return [{**r.record, "health": r.health} for r in mine], upto

    def page_for(self, child: str, after: int) -> tuple[list[dict[str, Any]], int, bool]:
        """A page of the index for ``child``: everything outside its own subtree after ``after``."""
        with self.db.read() as s:
            rows = list(
                s.execute(
                    select(FedPool.record, FedPool.health, FedPool.seq, FedPool.owner)
                    .where(FedPool.seq > after)
                    .order_by(FedPool.seq)
                    .limit(PAGE_ROWS)
                )
            )
        out = [
            {**r.record, "health": r.health} for r in rows if not node_code_within(r.owner, child)
        ]
        upto = rows[-1].seq if rows else after
        return out, upto, len(rows) == PAGE_ROWS

    def rows(self, owner: str | None, after: int, limit: int) -> list[FedPool]:
        """Index rows in change order, optionally only those of one owner's subtree."""
        q = select(FedPool).where(FedPool.seq > after).order_by(FedPool.seq).limit(limit)
        if owner:
            q = q.where((FedPool.owner == owner) | FedPool.owner.startswith(owner + "."))
        with self.db.read() as s:
            return list(s.scalars(q))

    def remote_pools(self, s: Session) -> list[PoolView]:
        """Pools of other nodes, available now, for the scheduler, with the free capacity
        their owner last reported (their total for records that carry none; the owner queues
        what it cannot start at once). Only records that changed since the last call are read
        and parsed, so a large index costs one narrow scan a pass."""
        rows = list(
            s.execute(
                select(FedPool.cpi, FedPool.seq).where(
                    FedPool.via != self.code, FedPool.health == PoolHealth.HEALTHY.value
                )
            )
        )
        stale = [cpi for cpi, seq in rows if self._specs.get(cpi, (-1,))[0] != seq]
        for i in range(0, len(stale), 500):
            chunk = stale[i : i + 500]
            for cpi, seq, rec in s.execute(
                select(FedPool.cpi, FedPool.seq, FedPool.record).where(FedPool.cpi.in_(chunk))
            ):
                spec = PoolSpec.model_validate(rec["spec"])
                free = Capacity.model_validate(rec["free"]) if "free" in rec else spec.total()
                self._specs[cpi] = (seq, spec, free)
        views = []
        for cpi, _seq in rows:
            _, spec, free = self._specs[cpi]
            views.append(PoolView(cpi, spec, PoolHealth.HEALTHY, free))
        return views

    def nodes(self) -> list[tuple[str, str, int, int]]:
        """Every node whose pools the index holds: (code, URL, pools, healthy), by code."""
        healthy = func.sum(case((FedPool.health == PoolHealth.HEALTHY.value, 1), else_=0))
        with self.db.read() as s:
            rows = s.execute(
                select(FedPool.owner, func.max(FedPool.url), func.count(), healthy)
                .group_by(FedPool.owner)
                .order_by(FedPool.owner)
            )
            return [(code, url, int(n), int(h or 0)) for code, url, n, h in rows]

    def remote_specs(self) -> list[tuple[dict[str, Any], str]]:
        """(pool description, health) of every pool in the index that another node serves."""
        with self.db.read() as s:
            rows = s.execute(
                select(FedPool.record, FedPool.health).where(FedPool.owner != self.code)
            )
            return [(rec.get("spec") or {}, health) for rec, health in rows]
