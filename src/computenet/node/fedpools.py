"""Pools other nodes serve, as this node's federation index holds them, for views that show
the whole federation (the console's pools page and counters) beside the node's own pools."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_federation import FedPool


@dataclass(frozen=True)
class ListedPool:
    """One pool row for a view: a local pool, or one from the index (``used`` then comes
    from the free capacity its node last reported, or None when it reported none)."""

    cpi: str
    provider: str
    health: str
    spec: dict[str, Any]
    running_tasks: int
    last_heartbeat_at: datetime | None
    remote: bool
    used: tuple[int, int] | None = None  # (cards, cores) in use, for remote pools


def local(row: t.Pool) -> ListedPool:
    """A pool this node serves."""
    return ListedPool(
        row.cpi,
        row.provider_prefix,
        row.health,
        row.spec,
        row.running_tasks,
        row.last_heartbeat_at,
        remote=False,
    )


def _remote(row: FedPool) -> ListedPool:
    rec = row.record
    spec = rec.get("spec") or {}
    machines = int(spec.get("machines", 1))
    acc = spec.get("accelerator")
    used = None
    free = rec.get("free")
    if isinstance(free, dict):
        cards = int(acc["count"]) * machines if acc else 0
        cores = int(spec.get("cpu_cores", 0)) * machines
        used = (
            max(0, cards - int(free.get("accelerators", 0))),
            max(0, cores - int(free.get("cpu_cores", 0))),
        )
    provider = str(rec.get("provider") or "/".join(row.cpi.split("/")[:2]))
    return ListedPool(
        row.cpi,
        provider,
        row.health,
        spec,
        int(rec.get("running_tasks", 0)),
        None,
        remote=True,
        used=used,
    )


def remote_page(
    db: Database,
    own_code: str,
    after: str | None,
    limit: int,
    health: str | None = None,
    provider: str | None = None,
    contains: str | None = None,
) -> list[ListedPool]:
    """Up to ``limit`` pools other nodes serve, by CPI after ``after``, filtered as the
    console's pools page filters its own."""
    sel = select(FedPool).where(FedPool.owner != own_code).order_by(FedPool.cpi).limit(limit)
    if after:
        sel = sel.where(FedPool.cpi > after)
    if health:
        sel = sel.where(FedPool.health == health)
    if provider:
        sel = sel.where(FedPool.cpi.startswith(provider + "/", autoescape=True))
    if contains:
        sel = sel.where(FedPool.cpi.contains(contains, autoescape=True))
    with db.read() as s:
        return [_remote(r) for r in s.scalars(sel)]
