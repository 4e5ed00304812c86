"""The console's federation-wide views, under ``/api/v1/console``, aggregated server-side.

Every node holds the federation index (``fed_pools``: its own pools, its subtree's and, from
its parent, the rest). These endpoints read that index, so a regional node and the national
node show the whole federation, and filter it by node (a node code selects that node's
subtree). Aggregates are computed in SQL over the JSON records and memoised until the index
changes (served up to 30 s stale while a recomputation runs), so a 100,000-pool index
costs one grouped query per change, and pools go to the browser one page at a time.

- ``GET /summary?node=``: counters (nodes, providers, pools by health, cards, cores) and the
  caller's visible tasks by state.
- ``GET /fed/pools?node=&health=&q=&page_size=&page_token=``: a page of the index.
- ``GET /fed/provinces?node=``: pools per province, for the choropleth.
- ``GET /fed/nodes``: the nodes of the federation, placed on the map, with parent-child
  links and their measured round-trip times.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, select

from computenet.model.task import TaskState
from computenet.node.api.deps import Runtime, User, owner_scope
from computenet.node.regions import PROVINCES, place, province_name
from computenet.node.tasks import utcnow
from computenet.node.views import Amount
from computenet.store import tables as t
from computenet.store import tables_monitoring as m
from computenet.store.db import Database
from computenet.store.tables_federation import FedPool

router = APIRouter(prefix="/api/v1/console", tags=["console"])
NodeCode = Annotated[str | None, Query(max_length=140, pattern=r"^[a-z0-9.]*$")]
RTT_WINDOW_S = 3600.0

_region = FedPool.record[("spec", "region", "code")].as_string()
_machines = func.coalesce(FedPool.record[("spec", "machines")].as_integer(), 1)
_cards = func.coalesce(FedPool.record[("spec", "accelerator", "count")].as_integer(), 0)
_cores = FedPool.record[("spec", "cpu_cores")].as_integer()


def _within(node: str | None) -> ColumnElement[bool] | None:
    """Index rows of ``node``'s subtree (None: everything)."""
    if not node:
        return None
    return (FedPool.owner == node) | FedPool.owner.startswith(node + ".", autoescape=True)


class IndexMemo:
    """Aggregates of the index, recomputed when it changed (its newest change number and row
    count are the key). While a recomputation runs, in a background thread, callers get the
    previous value if it is under ``MAX_STALE_S`` old: in a large federation the index changes
    every few seconds, and a page should not wait for a scan of it each time."""

    MAX_STALE_S = 30.0

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], tuple[tuple[int, int], float, Any]] = {}
        self._running: set[tuple[str, str]] = set()

    def get(self, db: Database, what: str, node: str | None, compute: Any) -> Any:
        with db.read() as s:
            key = tuple(s.execute(select(func.max(FedPool.seq), func.count())).one())
        version = (int(key[0] or 0), int(key[1] or 0))
        slot = (what, node or "")
        with self._lock:
            held = self._held.get(slot)
            if held is not None and held[0] == version:
                return held[2]
            fresh_enough = held is not None and self._clock() - held[1] < self.MAX_STALE_S
            if fresh_enough and slot in self._running:
                return held[2]  # type: ignore[index]
            if fresh_enough:
                self._running.add(slot)
        if fresh_enough:
            threading.Thread(target=self._store, args=(slot, version, compute), daemon=True).start()
            return held[2]  # type: ignore[index]
        return self._store(slot, version, compute)

    def _store(self, slot: tuple[str, str], version: tuple[int, int], compute: Any) -> Any:
        try:
            value = compute()
        finally:
            with self._lock:
                self._running.discard(slot)
        with self._lock:
            if len(self._held) > 256:  # one entry per (view, node filter): bound it
                self._held.clear()
            self._held[slot] = (version, self._clock(), value)
        return value


MEMO = IndexMemo()


class Summary(BaseModel):
    """Counters over the federation index (or one node's subtree), and the caller's tasks."""

    node: str | None
    nodes: int
    providers: int
    pools: int
    pools_by_health: dict[str, int]  # healthy | unhealthy | unavailable (a silent node's)
    cards: int
    cpu_cores: int
    tasks_by_state: dict[str, int]  # the tasks this node holds that the caller may see


@dataclass
class Cell:
    """Pools of one node in one province with one health: the unit every aggregate is
    summed from."""

    pools: int = 0
    cards: int = 0
    cpu_cores: int = 0


@dataclass
class Cube:
    """The index summed per (node, province, health), with each node's providers and URL:
    one pass over the JSON records, from which every view and node filter is added up."""

    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    providers: dict[str, set[str]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def of(self, node: str | None) -> list[tuple[tuple[str, str, str], Cell]]:
        """The cells of ``node``'s subtree (every cell without a node)."""
        return [(k, c) for k, c in self.cells.items() if within(k[0], node)]


def within(code: str, node: str | None) -> bool:
    """Whether node ``code`` is ``node`` or below it (always, without a node)."""
    return not node or code == node or code.startswith(node + ".")


def _cube(db: Database) -> Cube:
    region = func.substr(func.coalesce(_region, "11"), 1, 2)
    cube = Cube()
    with db.read() as s:
        q = select(
            FedPool.owner, region, FedPool.health, func.count(),
            func.sum(_cards * _machines), func.sum(_cores * _machines),
        ).group_by(FedPool.owner, region, FedPool.health)  # fmt: skip
        for owner, code, health, n, cards, cores in s.execute(q):
            cube.cells[(str(owner), str(code), str(health))] = Cell(
                int(n), int(cards or 0), int(cores or 0)
            )
        # A pool's provider is its CPI less the pool label: no JSON to read for it.
        for owner, cpi, url in s.execute(select(FedPool.owner, FedPool.cpi, FedPool.url)):
            cube.providers.setdefault(owner, set()).add(cpi.rsplit("/", 1)[0])
            cube.urls.setdefault(owner, url)
    return cube


def index_cube(db: Database) -> Cube:
    """The memoised cube of the federation index (see ``IndexMemo``)."""
    result: Cube = MEMO.get(db, "cube", None, lambda: _cube(db))
    return result


def _index_totals(cube: Cube, node: str | None) -> dict[str, Any]:
    cells = cube.of(node)
    health: dict[str, int] = {}
    for (_o, _r, h), c in cells:
        health[h] = health.get(h, 0) + c.pools
    owners = {o for o in cube.providers if within(o, node)}
    return {
        "nodes": len(owners),
        "providers": len(set().union(*(cube.providers[o] for o in owners))),
        "pools": sum(health.values()),
        "pools_by_health": {k: health.get(k, 0) for k in ("healthy", "unhealthy", "unavailable")},
        "cards": sum(c.cards for _, c in cells),
        "cpu_cores": sum(c.cpu_cores for _, c in cells),
    }


@router.get("/summary", response_model=Summary)
def summary(rt: Runtime, p: User, node: NodeCode = None) -> Summary:
    """Federation-wide counters (filtered to ``node``'s subtree when given) and the tasks
    this node holds that the caller may see (all for operators, its own for a user, those
    on its pools for a provider), by state."""
    totals = _index_totals(index_cube(rt.db), node)
    scope = owner_scope(p)
    with rt.db.read() as s:
        q = select(t.Task.state, func.count()).group_by(t.Task.state)
        if scope is not None:
            q = scope.where(q)
        states = {str(k): int(v) for k, v in s.execute(q)}
    return Summary(
        node=node or None,
        tasks_by_state={st.value: states.get(st.value, 0) for st in TaskState},
        **totals,
    )


class FedPoolRow(BaseModel):
    """A pool as the federation index knows it."""

    cpi: str
    node: str
    provider: str
    health: str
    region: str
    region_name: str
    accelerator: str | None
    cards: int
    cpu_cores: int
    free_cards: int | None  # as its node last reported; None when it reported none
    free_cpu_cores: int | None
    running_tasks: int
    currency: str
    price_per_card_hour: Amount
    price_per_core_hour: Amount


class FedPoolPage(BaseModel):
    """A page of the index, with how many pools match the filter."""

    pools: list[FedPoolRow]
    total: int
    next_page_token: str | None = None


def _row(rec: dict[str, Any], health: str) -> FedPoolRow:
    spec = rec.get("spec") or {}
    machines = int(spec.get("machines", 1))
    acc = spec.get("accelerator")
    reg = spec.get("region") or {}
    code = str(reg.get("code", "11"))
    free = rec.get("free")
    return FedPoolRow(
        cpi=rec["cpi"],
        node=str(rec.get("node", "")),
        provider=str(rec.get("provider", "")),
        health=health,
        region=code,
        region_name=reg.get("name") or province_name(code),
        accelerator=acc["model"] if acc else None,
        cards=int(acc["count"]) * machines if acc else 0,
        cpu_cores=int(spec.get("cpu_cores", 0)) * machines,
        free_cards=int(free.get("accelerators", 0)) if free else None,
        free_cpu_cores=int(free.get("cpu_cores", 0)) if free else None,
        running_tasks=int(rec.get("running_tasks", 0)),
        currency=str(spec.get("currency", "CNY")),
        price_per_card_hour=Decimal(str(spec.get("price_per_card_hour", "0"))),
        price_per_core_hour=Decimal(str(spec.get("price_per_core_hour", "0"))),
    )


@router.get("/fed/pools", response_model=FedPoolPage)
def fed_pools(
    rt: Runtime,
    _p: User,
    node: NodeCode = None,
    health: Annotated[str | None, Query(pattern="^(healthy|unhealthy|unavailable)$")] = None,
    q: Annotated[str | None, Query(max_length=128)] = None,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    page_token: Annotated[str | None, Query(max_length=256)] = None,
) -> FedPoolPage:
    """A page of the federation index by CPI: every node's pools, or ``node``'s subtree."""
    conds = []
    subtree = _within(node)
    if subtree is not None:
        conds.append(subtree)
    if health:
        conds.append(FedPool.health == health)
    if q:
        conds.append(FedPool.cpi.contains(q, autoescape=True))
    with rt.db.read() as s:
        sel = select(FedPool.record, FedPool.health).where(*conds).order_by(FedPool.cpi)
        if page_token:
            sel = sel.where(FedPool.cpi > page_token)
        rows = list(s.execute(sel.limit(page_size + 1)))
        total = int(s.scalar(select(func.count()).select_from(FedPool).where(*conds)) or 0)
    page = [_row(rec, str(h)) for rec, h in rows[:page_size]]
    more = len(rows) > page_size
    return FedPoolPage(pools=page, total=total, next_page_token=page[-1].cpi if more else None)


class Province(BaseModel):
    """Pools of the index in one province."""

    code: str
    name: str
    lat: float
    lon: float
    pools: int
    healthy: int
    cards: int
    cpu_cores: int


def _provinces(cube: Cube, node: str | None) -> list[Province]:
    out = {
        code: Province(code=code, name=name, lat=lat, lon=lon, pools=0, healthy=0, cards=0,
                       cpu_cores=0)
        for code, (name, lat, lon) in PROVINCES.items()
    }  # fmt: skip
    for (_owner, code, health), c in cube.of(node):
        pt = out.get(code)
        if pt is None:  # a code the table does not know: keep it, placed mid-China
            lat, lon = place(code)
            pt = out[code] = Province(
                code=code, name=code, lat=lat, lon=lon, pools=0, healthy=0, cards=0, cpu_cores=0
            )
        pt.pools += c.pools
        pt.healthy += c.pools if health == "healthy" else 0
        pt.cards += c.cards
        pt.cpu_cores += c.cpu_cores
    return sorted(out.values(), key=lambda p: p.code)


@router.get("/fed/provinces", response_model=list[Province])
def fed_provinces(rt: Runtime, _p: User, node: NodeCode = None) -> list[Province]:
    """Pools per province (GB/T 2260 two-digit code) over the index, every province listed."""
    return _provinces(index_cube(rt.db), node)


class MapNode(BaseModel):
    """A node of the federation, placed where it was measured from or where its pools are."""

    code: str
    url: str
    pools: int
    healthy: int
    region: str | None  # GB/T 2260 province code; None when nothing places it
    lat: float | None
    lon: float | None
    relation: str  # self | parent | subtree | elsewhere


class Link(BaseModel):
    """A parent-child link; ``rtt_ms`` is the child's measured mean round trip to its
    parent over the last hour, as this node holds it (None when unmeasured here)."""

    parent: str
    child: str
    rtt_ms: float | None
    samples: int


class FedMap(BaseModel):
    """The federation's nodes and links for the map."""

    nodes: list[MapNode]
    links: list[Link]


def _parent(code: str) -> str | None:
    return code.rsplit(".", 1)[0] if "." in code else None


def federation_nodes(db: Database) -> list[tuple[str, str, int, int]]:
    """Every node whose pools the index holds: (code, URL, pools, healthy), by code, from
    the memoised cube."""
    cube = index_cube(db)
    per: dict[str, list[int]] = {}
    for (owner, _r, health), c in cube.cells.items():
        n = per.setdefault(owner, [0, 0])
        n[0] += c.pools
        n[1] += c.pools if health == "healthy" else 0
    return [(o, cube.urls.get(o, ""), n, h) for o, (n, h) in sorted(per.items())]


def _modal_provinces(cube: Cube) -> dict[str, str]:
    """Each node's province with the most pools."""
    per: dict[str, Counter[str]] = {}
    for (owner, code, _h), c in cube.cells.items():
        per.setdefault(owner, Counter())[code] += c.pools
    return {o: c.most_common(1)[0][0] for o, c in per.items()}


def _node_map(rt: Runtime) -> FedMap:
    st = rt.settings
    own, parent = st.node_code, rt.federation.ident.parent_code
    since = utcnow() - timedelta(seconds=RTT_WINDOW_S)
    cube = index_cube(rt.db)
    counts = {code: (url, n, h) for code, url, n, h in federation_nodes(rt.db)}
    modal = _modal_provinces(cube)
    with rt.db.read() as s:
        rtts = {
            str(g).removeprefix("node:"): (str(fr), str(to), float(avg), int(n))
            for g, fr, to, avg, n in s.execute(
                select(
                    m.RttSample.gateway_id,
                    func.max(m.RttSample.from_region),
                    func.max(m.RttSample.to_region),
                    func.avg(m.RttSample.rtt_ms),
                    func.count(),
                )
                .where(m.RttSample.gateway_id.startswith("node:"), m.RttSample.at >= since)
                .group_by(m.RttSample.gateway_id)
            )
        }
    codes = set(counts) | {own} | set(rtts) | ({parent} if parent else set())
    regions: dict[str, str] = {own: st.region[:2]}
    for child, (fr, to, _avg, _n) in rtts.items():
        regions.setdefault(child, fr[:2])
        up = _parent(child)
        if up:
            regions.setdefault(up, to[:2])
    for code, province in modal.items():
        regions.setdefault(code, province)
    nodes = []
    for code in sorted(codes):
        url, n, h = counts.get(code, ("", 0, 0))
        reg = regions.get(code)
        lat, lon = place(reg) if reg else (None, None)
        relation = (
            "self"
            if code == own
            else "parent"
            if code == parent
            else "subtree"
            if code.startswith(own + ".")
            else "elsewhere"
        )
        nodes.append(
            MapNode(code=code, url=url, pools=n, healthy=h, region=reg, lat=lat, lon=lon,
                    relation=relation)
        )  # fmt: skip
    links = []
    for code in sorted(codes):
        up = _parent(code)
        while up is not None and up not in codes:
            up = _parent(up)
        if up is None:
            continue
        rtt = rtts.get(code)
        links.append(
            Link(parent=up, child=code, rtt_ms=round(rtt[2], 3) if rtt else None,
                 samples=rtt[3] if rtt else 0)
        )  # fmt: skip
    return FedMap(nodes=nodes, links=links)


@router.get("/fed/nodes", response_model=FedMap)
def fed_nodes(rt: Runtime, _p: User) -> FedMap:
    """The federation's nodes with their pool counts and where to draw them, and each
    parent-child link with its measured round-trip time."""
    return _node_map(rt)
