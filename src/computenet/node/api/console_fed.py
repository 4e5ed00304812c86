"""The console's federation-wide views, under ``/api/v1/console``, aggregated server-side.

Every node holds the federation index (``fed_pools``: its own pools, its subtree's and, from
its parent, the rest). These endpoints read that index, so a regional node and the national
node show the whole federation, and filter it by node (a node code selects that node's
subtree). Counters, provinces and the node map are added up from sums of the index kept up
to date as it changes (``computenet.node.console_cube``), so a 100,000-pool index is not
scanned per request; pools go to the browser one page at a time.

- ``GET /summary?node=``: counters (nodes, providers, pools by health, cards, cores) and the
  caller's visible tasks by state.
- ``GET /fed/pools?node=&health=&q=&page_size=&page_token=``: a page of the index.
- ``GET /fed/provinces?node=``: pools per province, for the choropleth.
- ``GET /fed/nodes``: the nodes of the federation, placed on the map, with parent-child
  links and their measured round-trip times.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, select

from computenet.model.task import TaskState
from computenet.node.api.deps import Runtime, User, owner_scope
from computenet.node.console_cube import Cube, live_cube, within
from computenet.node.regions import PROVINCES, place, province_name
from computenet.node.tasks import utcnow
from computenet.node.views import Amount
from computenet.store import tables as t
from computenet.store import tables_monitoring as m
from computenet.store.tables_federation import FedPool

router = APIRouter(prefix="/api/v1/console", tags=["console"])
NodeCode = Annotated[str | None, Query(max_length=140, pattern=r"^[a-z0-9.]*$")]
RTT_WINDOW_S = 3600.0


def _within(node: str | None) -> ColumnElement[bool] | None:
    """Index rows of ``node``'s subtree (None: everything)."""
    if not node:
        return None
    return (FedPool.owner == node) | FedPool.owner.startswith(node + ".", autoescape=True)


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


def index_cube(rt: Runtime) -> Cube:
    """The federation index's sums, up to date (see ``computenet.node.console_cube``)."""
    return live_cube(rt.db, rt.federation.index).current()


def _index_totals(cube: Cube, node: str | None) -> dict[str, Any]:
    cells = cube.of(node)
    health: dict[str, int] = {}
    for (_o, _r, h), c in cells:
        health[h] = health.get(h, 0) + c.pools
    owners = {o for o in cube.providers if within(o, node)}
    providers: set[str] = set()
    for o in owners:
        providers |= set(cube.providers[o])
    return {
        "nodes": len(owners),
        "providers": len(providers),
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
    totals = _index_totals(index_cube(rt), node)
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
    """Pools in one province, placed on the map (the index's, or this node's own for
    ``/console/map``)."""

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
    return _provinces(index_cube(rt), node)


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


def federation_nodes(rt: Runtime) -> list[tuple[str, str, int, int]]:
    """Every node whose pools the index holds: (code, URL, pools, healthy), by code, from
    the live sums (no scan of the index)."""
    cube = index_cube(rt)
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
    cube = index_cube(rt)
    counts = {code: (url, n, h) for code, url, n, h in federation_nodes(rt)}
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
