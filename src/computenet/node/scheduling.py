"""Node-side discovery, explanations, the dataset registry and tenants' fair-share
settings, over the pure core."""

from __future__ import annotations

import re
import time
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from computenet.errors import Conflict, NotFound
from computenet.model.pool import check_region
from computenet.model.task import Policy, TaskSpec, TaskState
from computenet.node.access import Visibility
from computenet.node.placing import Placer
from computenet.node.sched_inputs import running, tenant_shares
from computenet.node.tasks import check_task_id, utcnow
from computenet.sched.core import Context, Estimate, explain, rank_offers
from computenet.sched.pooltable import PoolTable, build_table
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_sched import Dataset as DatasetRow
from computenet.store.tables_sched import ShareSetting

TABLE_TTL_S = 2.0  # offers reuse the pool table this long: discovery stays fast under load
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
EXPLAIN_TOP = 5


class DatasetIn(BaseModel):
    """Register a dataset, or replace its record."""

    name: str = Field(min_length=1, max_length=128)
    size_bytes: int = Field(ge=0, le=10**18)
    regions: list[str] = Field(min_length=1, max_length=64, description="GB/T 2260 codes")
    description: str = Field(default="", max_length=4096)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DATASET_NAME.fullmatch(v):
            raise ValueError("a dataset name is letters, digits, '.', '_' or '-' (max 128)")
        return v

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: list[str]) -> list[str]:
        return [check_region(code) for code in v]


class DatasetOut(DatasetIn):
    """A registered dataset."""

    owner: str


class ShareIn(BaseModel):
    """A tenant's fair-share weight, and the most it may hold at once (cards; CPU work
    counts cores / 8), or no limit."""

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(gt=0, le=1000)
    quota_cards: float | None = Field(default=None, ge=0, le=10_000_000)


class ShareOut(ShareIn):
    """A tenant's setting and what its placed and running work holds now (cards)."""

    tenant: str
    held_cards: float


class OfferOut(BaseModel):
    """One candidate pool with its estimates (seconds, the pool's currency, grams CO2)."""

    pool: str
    variant: int
    start_s: float
    wait_s: float
    transfer_s: float
    run_s: float
    finish_s: float
    cost: float
    carbon_g: float
    rtt_ms: float
    reliability: float
    score: float
    chosen: bool = False
    speed_known: bool = True  # False: no speed figure for the card; run_s is the declared time


class ExplainOut(BaseModel):
    """Why a task is where it is."""

    task_id: str
    state: TaskState
    pool: str | None
    policy: str
    reason: str
    pools_total: int
    eligible: int
    excluded: dict[str, int]
    candidates: list[OfferOut]
    placement: str = ""
    speed_note: str = ""  # set when some run times are declared, not estimated


def offer_out(e: Estimate, chosen: bool = False) -> OfferOut:
    """The wire form of an estimate."""
    return OfferOut(
        pool=e.pool,
        variant=e.variant,
        start_s=e.start_s,
        wait_s=e.wait_s,
        transfer_s=e.transfer_s,
        run_s=e.run_s,
        finish_s=e.finish_s,
        cost=round(e.cost, 6),
        carbon_g=round(e.carbon_g, 3),
        rtt_ms=round(e.rtt_ms, 3),
        reliability=e.reliability,
        score=e.score,
        chosen=chosen,
        speed_known=e.speed_known,
    )


class SchedService:
    """Offers, explanations and datasets for the API."""

    def __init__(self, db: Database, placer: Placer) -> None:
        self.db = db
        self.placer = placer
        self._cached: tuple[float, PoolTable, Context] | None = None

    def _inputs(self) -> tuple[PoolTable, Context]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < TABLE_TTL_S:
            return self._cached[1], self._cached[2]
        with self.db.read() as s:
            views = self.placer.pool_views(s)
            ctx = self.placer.context(s)
        table = build_table(views, ctx)
        self._cached = (now, table, ctx)
        return table, ctx

    def offers(self, template: TaskSpec, policy: Policy | None, limit: int) -> list[OfferOut]:
        """Healthy pools matching ``template``, ranked, with estimates."""
        table, ctx = self._inputs()
        return [offer_out(e) for e in rank_offers(template, table, ctx, policy, limit)]

    def explain(self, tid: str, scope: Visibility | None) -> ExplainOut:
        """Constraints' exclusions for a waiting task; for a placed one, its pool vs the rest."""
        check_task_id(tid)
        with self.db.read() as s:
            row = s.get(t.Task, tid)
            if row is None or (scope is not None and not scope.allows(row)):
                raise NotFound(f"no task {tid!r}")
            spec = TaskSpec.model_validate(row.spec)
            views = self.placer.pool_views(s)
            ctx = self.placer.context(s)
            event = s.scalars(
                select(t.TaskEvent.message)
                .where(t.TaskEvent.task_id == tid, t.TaskEvent.message.like("placed on %"))
                .order_by(t.TaskEvent.id.desc())
                .limit(1)
            ).first()
            pool, state, reason = row.pool_cpi, TaskState(row.state), row.reason
        if pool is not None:
            # Judge the placed pool as it was before this task took its share of it.
            need = spec.resources.need()
            views = [replace(v, free=v.free.plus(need)) if v.cpi == pool else v for v in views]
        table = build_table(views, ctx)
        ex = explain(tid, spec, table, ctx, limit=max(1, len(table)))
        top = [offer_out(e, e.pool == pool) for e in ex.candidates[:EXPLAIN_TOP]]
        if pool is not None and not any(o.chosen for o in top):
            top += [offer_out(e, True) for e in ex.candidates if e.pool == pool]
        return ExplainOut(
            task_id=tid,
            state=state,
            pool=pool,
            policy=ex.policy,
            reason=reason or ex.reason,
            pools_total=ex.pools_total,
            eligible=ex.eligible,
            excluded=ex.excluded,
            candidates=top,
            placement=event or "",
            speed_note=ex.speed_note,
        )

    def add_dataset(self, body: DatasetIn, owner: str, admin: bool) -> DatasetOut:
        """Register or update a dataset; only its owner (or an admin) may change it."""
        now = utcnow()
        with self.db.write() as s:
            row = s.get(DatasetRow, body.name)
            if row is None:
                s.add(
                    DatasetRow(
                        name=body.name,
                        size_bytes=body.size_bytes,
                        regions=body.regions,
                        description=body.description,
                        owner=owner,
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                if owner != row.owner and not admin:
                    raise Conflict(f"dataset {body.name} belongs to {row.owner}")
                row.size_bytes = body.size_bytes
                row.regions = body.regions
                row.description = body.description
                row.updated_at = now
            out_owner = owner if row is None else row.owner
        self._cached = None
        return DatasetOut(**body.model_dump(), owner=out_owner)

    def datasets(self, name: str | None = None) -> list[DatasetOut]:
        """Registered datasets, or the one named."""
        with self.db.read() as s:
            q = select(DatasetRow).order_by(DatasetRow.name)
            if name is not None:
                q = q.where(DatasetRow.name == name)
            rows = list(s.scalars(q))
        if name is not None and not rows:
            raise NotFound(f"no dataset {name!r}")
        return [
            DatasetOut(
                name=r.name,
                size_bytes=r.size_bytes,
                regions=r.regions,
                description=r.description,
                owner=r.owner,
            )
            for r in rows
        ]

    def set_share(self, tenant: str, body: ShareIn) -> ShareOut:
        """Set a tenant's weight and quota; the next scheduling pass uses them."""
        with self.db.write() as s:
            row = s.get(ShareSetting, tenant)
            if row is None:
                row = ShareSetting(tenant=tenant)
                s.add(row)
            row.weight, row.quota_cards, row.updated_at = body.weight, body.quota_cards, utcnow()
        return self.shares(tenant)[0]

    def shares(self, tenant: str | None = None) -> list[ShareOut]:
        """Tenants with a setting or work held, by name: all, or the one named (its
        defaults when it has neither)."""
        with self.db.read() as s:
            # Only the shares: not the whole scheduling context (telemetry, datasets, ...).
            tenants = tenant_shares(s, running(s))
        names = sorted(tenants) if tenant is None else [tenant]
        return [
            ShareOut(
                tenant=name,
                weight=tenants[name].weight if name in tenants else 1.0,
                quota_cards=tenants[name].quota if name in tenants else None,
                held_cards=tenants[name].usage if name in tenants else 0.0,
            )
            for name in names
        ]
