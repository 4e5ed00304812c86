"""Data the web console shows, under ``/api/v1/console``; every list is paginated.

- ``GET /overview``: this node, task counts by state, pool counts by health, totals.
- ``GET /tree``: the federation tree from this node: its providers (paginated, with pool
  counts), its parent, its enrolled child nodes (with how long since each last synced), and
  every node of the federation whose pools the index holds (``federation``, with counts).
- ``GET /map``: pools grouped by region with coordinates, for the lat/lon plot: this node's
  and, through the federation index, every other node's.
- ``GET /pools``: pools with live capacity, utilization, price, health and quality.
- ``GET /latency``: the region -> region RTT matrix.
- ``GET /usage``: usage and the ledger's charges per time bucket.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import case, func, select

from computenet.billing.ledger import period_of
from computenet.model.task import TaskState
from computenet.node import fedpools, netmeasure, quality
from computenet.node.api.console_fed import Province as RegionPoint
from computenet.node.api.console_fed import federation_nodes
from computenet.node.api.console_interim import (
    ZERO,
    billed_by_intervals,
    closing_charge,
    intervals_since,
)
from computenet.node.api.deps import Runtime, User, owner_scope
from computenet.node.quality import Quality
from computenet.node.regions import PROVINCES, place, province_name
from computenet.node.tasks import ACTIVE, utcnow
from computenet.node.views import Amount
from computenet.store import tables as t
from computenet.store.tables_billing import Charge, InterimUsage
from computenet.store.tables_federation import FedChild

router = APIRouter(prefix="/api/v1/console", tags=["console"])
PageSize = Annotated[int, Query(ge=1, le=500)]
Token = Annotated[str | None, Query(max_length=256)]


class Overview(BaseModel):
    """The node at a glance."""

    code: str
    name: str
    level: str
    region: str
    tasks_by_state: dict[str, int]
    pools_by_health: dict[str, int]
    providers: int
    cards: int
    cpu_cores: int


class ProviderNode(BaseModel):
    """A provider in the tree, with its pool counts."""

    prefix: str
    name: str
    pools: int
    healthy: int


class ChildNode(BaseModel):
    """A child node enrolled here; ``silent`` once it has missed the sync timeout."""

    code: str
    name: str
    level: str
    url: str
    silent: bool = False
    last_seen_s: float | None = None  # seconds since its last sync message


class FedNode(BaseModel):
    """A node of the federation as this node's index knows it."""

    code: str
    url: str
    pools: int
    healthy: int
    relation: str  # self | subtree (below this node) | elsewhere


class Tree(BaseModel):
    """This node, a page of its providers and its child nodes."""

    code: str
    name: str
    level: str
    providers: list[ProviderNode]
    next_page_token: str | None = None
    parent: str | None = None
    children: list[ChildNode]
    federation: list[FedNode] = []


class PoolRow(BaseModel):
    """A pool as the console lists it."""

    cpi: str
    provider: str
    health: str
    region: str
    region_name: str
    accelerator: str | None
    cards: int
    cpu_cores: int
    memory_mib: int
    used_cards: int
    used_cpu_cores: int
    utilization: float
    running_tasks: int
    currency: str
    price_per_card_hour: Amount
    price_per_core_hour: Amount
    last_heartbeat_at: datetime | None
    quality: Quality


class PoolPage(BaseModel):
    """A page of pools."""

    pools: list[PoolRow]
    next_page_token: str | None = None


class ProviderQuality(BaseModel):
    """A provider's quality figures."""

    prefix: str
    quality: Quality


class LatencyEntry(BaseModel):
    """One measured region pair."""

    from_region: str
    from_name: str
    to_region: str
    to_name: str
    rtt_ms: float


class UsagePoint(BaseModel):
    """Usage and cost in one time bucket."""

    start: datetime
    tasks: int
    card_hours: Amount
    cpu_core_hours: Amount
    pflops_hours_fp16: Amount
    cost: Amount


class UsageSeries(BaseModel):
    """Usage over time; cost is what the ledger charged (exact, summed; CNY by default)."""

    bucket_s: int
    points: list[UsagePoint]


def _totals(spec: dict[str, Any]) -> tuple[int, int, int]:
    machines = int(spec.get("machines", 1))
    acc = spec.get("accelerator")
    cards = int(acc["count"]) * machines if acc else 0
    return cards, int(spec["cpu_cores"]) * machines, int(spec["memory_mib"]) * machines


@router.get("/overview", response_model=Overview)
def overview(rt: Runtime, p: User) -> Overview:
    """Task counts by state (yours, or all for an admin), pools by health, and totals."""
    owner = owner_scope(p)
    with rt.db.read() as s:
        q = select(t.Task.state, func.count()).group_by(t.Task.state)
        if owner is not None:
            q = owner.where(q)
        states = {k: int(v) for k, v in s.execute(q)}
        health = {
            k: int(v)
            for k, v in s.execute(select(t.Pool.health, func.count()).group_by(t.Pool.health))
        }
        providers = int(s.scalar(select(func.count()).select_from(t.Provider)) or 0)
        specs = list(s.scalars(select(t.Pool.spec)))
    # Counters cover the federation, as the map does: a national node shows every pool.
    for spec, pool_health in rt.federation.index.remote_specs():
        specs.append(spec)
        health[pool_health] = health.get(pool_health, 0) + 1
    cards = cores = 0
    for spec in specs:
        c, k, _ = _totals(spec)
        cards, cores = cards + c, cores + k
    st = rt.settings
    return Overview(
        code=st.node_code,
        name=st.name,
        level=st.level,
        region=st.region,
        tasks_by_state={s.value: states.get(s.value, 0) for s in TaskState},
        pools_by_health={
            "healthy": health.get("healthy", 0),
            "unhealthy": health.get("unhealthy", 0),
        },
        providers=providers,
        cards=cards,
        cpu_cores=cores,
    )


@router.get("/tree", response_model=Tree)
def tree(rt: Runtime, _p: User, page_size: PageSize = 100, page_token: Token = None) -> Tree:
    """This node's providers (a page, by prefix) with pool counts, and its child nodes."""
    with rt.db.read() as s:
        q = select(t.Provider).order_by(t.Provider.prefix).limit(page_size + 1)
        if page_token:
            q = q.where(t.Provider.prefix > page_token)
        rows = list(s.scalars(q))
        page = rows[:page_size]
        healthy = func.sum(case((t.Pool.health == "healthy", 1), else_=0))
        counts = {
            prefix: (int(n), int(h or 0))
            for prefix, n, h in s.execute(
                select(t.Pool.provider_prefix, func.count(), healthy)
                .where(t.Pool.provider_prefix.in_([r.prefix for r in page]))
                .group_by(t.Pool.provider_prefix)
            )
        }
        children = [
            ChildNode(
                code=c.code,
                name=c.code,
                level=c.level,
                url=c.url,
                silent=c.silent,
                last_seen_s=(utcnow() - c.last_seen_at).total_seconds() if c.last_seen_at else None,
            )
            for c in s.scalars(select(FedChild).order_by(FedChild.code))
        ]
    st = rt.settings
    own = st.node_code
    federation = [
        FedNode(
            code=code,
            url=url,
            pools=n,
            healthy=h,
            relation="self"
            if code == own
            else "subtree"
            if code.startswith(own + ".")
            else "elsewhere",
        )
        for code, url, n, h in federation_nodes(rt)  # kept summed: the index may be large
    ]
    return Tree(
        code=st.node_code,
        name=st.name,
        level=st.level,
        providers=[
            ProviderNode(
                prefix=r.prefix,
                name=r.name,
                pools=counts.get(r.prefix, (0, 0))[0],
                healthy=counts.get(r.prefix, (0, 0))[1],
            )
            for r in page
        ],
        next_page_token=page[-1].prefix if len(rows) > page_size else None,
        parent=rt.federation.ident.parent_code,
        children=children,
        federation=federation,
    )


@router.get("/map", response_model=list[RegionPoint])
def region_map(rt: Runtime, _p: User) -> list[RegionPoint]:
    """Pools grouped by region code and place (one point per region, not per pool); every
    province appears, with zero pools where it has none, so the plot shows China's shape."""
    with rt.db.read() as s:
        rows = [(spec, health) for spec, health in s.execute(select(t.Pool.spec, t.Pool.health))]
    rows += rt.federation.index.remote_specs()
    points: dict[tuple[str, float, float], RegionPoint] = {
        (code, lat, lon): RegionPoint(
            code=code, name=name, lat=lat, lon=lon, pools=0, healthy=0, cards=0, cpu_cores=0
        )
        for code, (name, lat, lon) in PROVINCES.items()
    }
    for spec, health in rows:
        reg = spec.get("region", {})
        code = str(reg.get("code", "11"))
        lat, lon = place(code, reg.get("lat"), reg.get("lon"))
        key = (code, lat, lon)
        pt = points.get(key)
        if pt is None:
            name = reg.get("name") or province_name(code)
            pt = points[key] = RegionPoint(
                code=code, name=name, lat=lat, lon=lon, pools=0, healthy=0, cards=0, cpu_cores=0
            )
        cards, cores, _ = _totals(spec)
        pt.pools += 1
        pt.healthy += health == "healthy"
        pt.cards += cards
        pt.cpu_cores += cores
    return sorted(points.values(), key=lambda p: p.code)


def _used(rt: Runtime, cpis: list[str]) -> dict[str, tuple[int, int]]:
    """Cards and cores held by placed and active tasks on the given pools."""
    with rt.db.read() as s:
        return {
            str(cpi): (int(a or 0), int(c or 0))
            for cpi, a, c in s.execute(
                select(t.Task.pool_cpi, func.sum(t.Task.accelerators), func.sum(t.Task.cpu_cores))
                .where(
                    t.Task.pool_cpi.in_(cpis),
                    t.Task.state.in_((TaskState.QUEUED.value, *ACTIVE)),
                )
                .group_by(t.Task.pool_cpi)
            )
        }


@router.get("/pools", response_model=PoolPage)
def pools(
    rt: Runtime,
    _p: User,
    page_size: PageSize = 50,
    page_token: Token = None,
    health: Annotated[str | None, Query(pattern="^(healthy|unhealthy)$")] = None,
    provider: Annotated[str | None, Query(max_length=128)] = None,
    q: Annotated[str | None, Query(max_length=128)] = None,
) -> PoolPage:
    """A page of pools by CPI with capacity, use, price, health and quality figures: this
    node's own, and those its federation index holds (other nodes')."""
    with rt.db.read() as s:
        sel = select(t.Pool).order_by(t.Pool.cpi).limit(page_size + 1)
        if page_token:
            sel = sel.where(t.Pool.cpi > page_token)
        if health:
            sel = sel.where(t.Pool.health == health)
        if provider:
            sel = sel.where(t.Pool.provider_prefix == provider)
        if q:
            sel = sel.where(t.Pool.cpi.contains(q, autoescape=True))
        rows = [fedpools.local(r) for r in s.scalars(sel)]
    code = rt.settings.node_code
    rows += fedpools.remote_page(rt.db, code, page_token, page_size + 1, health, provider, q)
    rows = sorted(rows, key=lambda r: r.cpi)[: page_size + 1]
    page = rows[:page_size]
    cpis = [r.cpi for r in page if not r.remote]
    used = _used(rt, cpis)
    figures = quality.pool_quality(rt.db, cpis=cpis) if cpis else {}
    out = []
    for r in page:
        cards, cores, mem = _totals(r.spec)
        ucards, ucores = r.used or used.get(r.cpi, (0, 0))
        util = max(ucards / cards if cards else 0.0, ucores / cores if cores else 0.0)
        reg = r.spec.get("region", {})
        acc = r.spec.get("accelerator")
        out.append(
            PoolRow(
                cpi=r.cpi,
                provider=r.provider,
                health=r.health,
                region=str(reg.get("code", "11")),
                region_name=reg.get("name") or province_name(str(reg.get("code", "11"))),
                accelerator=acc["model"] if acc else None,
                cards=cards,
                cpu_cores=cores,
                memory_mib=mem,
                used_cards=ucards,
                used_cpu_cores=ucores,
                utilization=min(1.0, util),
                running_tasks=r.running_tasks,
                currency=r.spec.get("currency", "CNY"),
                price_per_card_hour=Decimal(str(r.spec.get("price_per_card_hour", "0"))),
                price_per_core_hour=Decimal(str(r.spec.get("price_per_core_hour", "0"))),
                last_heartbeat_at=r.last_heartbeat_at,
                quality=figures.get(r.cpi) or Quality(),
            )
        )
    return PoolPage(pools=out, next_page_token=page[-1].cpi if len(rows) > page_size else None)


@router.get("/providers/quality", response_model=list[ProviderQuality])
def providers_quality(rt: Runtime, _p: User) -> list[ProviderQuality]:
    """Quality figures per provider over the last hour."""
    return [
        ProviderQuality(prefix=k, quality=v)
        for k, v in sorted(quality.provider_quality(rt.db).items())
    ]


@router.get("/latency", response_model=list[LatencyEntry])
def latency(rt: Runtime, _p: User) -> list[LatencyEntry]:
    """The measured region -> region round-trip times (mean over the last hour)."""
    return [
        LatencyEntry(
            from_region=a,
            from_name=province_name(a),
            to_region=b,
            to_name=province_name(b),
            rtt_ms=round(v, 3),
        )
        for (a, b), v in sorted(netmeasure.latency_matrix(rt.db).items())
    ]


def _point(points: dict[int, UsagePoint], at: datetime, bucket_s: int) -> UsagePoint:
    key = int(at.timestamp()) // bucket_s * bucket_s
    pt = points.get(key)
    if pt is None:
        zero = Decimal(0)
        pt = points[key] = UsagePoint(
            start=datetime.fromtimestamp(key, at.tzinfo),
            tasks=0,
            card_hours=zero,
            cpu_core_hours=zero,
            pflops_hours_fp16=zero,
            cost=zero,
        )
    return pt


@router.get("/usage", response_model=UsageSeries)
def usage(
    rt: Runtime,
    p: User,
    bucket_s: Annotated[int, Query(ge=60, le=7 * 86400)] = 3600,
    since_s: Annotated[int, Query(ge=60, le=366 * 86400)] = 7 * 86400,
) -> UsageSeries:
    """Usage records (the caller's, those on a provider's pools, or all for an operator)
    summed per bucket, with what the ledger charged for them and for reservation windows."""
    since = utcnow() - timedelta(seconds=since_s)
    scope = owner_scope(p)
    u = t.UsageRecord
    q = (
        select(
            u.created_at,
            u.card_hours,
            u.cpu_core_hours,
            u.pflops_hours_fp16,
            Charge.amount,
            u.task_id,
            u.attempt,
        )
        .join(t.Task, t.Task.id == u.task_id)
        .outerjoin(Charge, closing_charge())
        .where(u.created_at >= since)
    )
    windows = select(Charge.created_at, Charge.amount).where(
        Charge.task_id.startswith("rsv-"), Charge.created_at >= since
    )
    if scope is not None:
        q = scope.where(q)
        if scope.owner is not None:
            windows = windows.where(Charge.owner == scope.owner)
        if scope.pool_prefix is not None:
            windows = windows.where(Charge.pool_cpi.startswith(scope.pool_prefix, autoescape=True))
    points: dict[int, UsagePoint] = {}
    with rt.db.read() as s:
        rows = list(s.execute(q))
        # A replica's intervals are points of their own; its usage record adds the rest.
        billed = billed_by_intervals(s, ((tid, att) for *_x, tid, att in rows))
        for at, cards, cores, pflops, amount, tid, att in rows:
            done = billed.get((tid, att), (ZERO, ZERO, ZERO))
            pt = _point(points, at, bucket_s)
            pt.tasks += 1
            pt.card_hours += cards - done[0]
            pt.cpu_core_hours += cores - done[1]
            pt.pflops_hours_fp16 += (pflops or 0) - done[2]
            pt.cost += amount or 0
        for iv in intervals_since(s, since, scope):
            pt = _point(points, iv.at, bucket_s)
            pt.card_hours += iv.card_hours
            pt.cpu_core_hours += iv.cpu_core_hours
            pt.pflops_hours_fp16 += iv.pflops_hours_fp16
            pt.cost += iv.amount
        for at, amount in s.execute(windows):
            _point(points, at, bucket_s).cost += amount
    return UsageSeries(bucket_s=bucket_s, points=[points[k] for k in sorted(points)])


class ServiceRequests(BaseModel):
    """Requests a service's replicas served in a month, counted by the routers that served
    them (on any node) and billed with the replicas' intervals."""

    service: str
    tenant: str
    requests: int


@router.get("/service-requests", response_model=list[ServiceRequests])
def service_requests(
    rt: Runtime,
    p: User,
    period: Annotated[str | None, Query(pattern=r"^[0-9]{4}-[0-9]{2}$")] = None,
) -> list[ServiceRequests]:
    """Requests per service and tenant in ``period`` (default this month), of the replicas
    the caller may see."""
    i = InterimUsage
    q = (
        select(i.service, i.tenant, func.sum(i.requests))
        .join(t.Task, t.Task.id == i.task_id)
        .where(i.period == (period or period_of(utcnow())))
        .group_by(i.service, i.tenant)
        .order_by(i.service, i.tenant)
    )
    scope = owner_scope(p)
    if scope is not None:
        q = scope.where(q)
    with rt.db.read() as s:
        return [
            ServiceRequests(service=name, tenant=tenant, requests=int(n or 0))
            for name, tenant, n in s.execute(q)
        ]
