"""One scheduling round, the fast way: per shape with NumPy, per task in compiled code.

Tasks are grouped by shape (:func:`computenet.sched.batch.shape_key`: same requirements, so
the same eligible pools, estimates and static scores). Each shape is scored once over the
pool table with NumPy; the tasks then become a few integer columns (shape, tenant, priority,
seq), and :func:`computenet.sched.kernel.run_round` tries them one by one in fair-share order
over arrays of free capacity, with no Python object per task. Decisions are built from the
resulting columns at the end.

The decisions are exactly those of the reference round (:mod:`computenet.sched.batch`), which
still runs the rounds this path does not cover (ones with advance reservations, and ones with
preemptible running work that an on-demand task could displace) and rounds too small for the
compiled loop to pay for loading it (:data:`COMPILED_FROM_TASKS`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from computenet.model.task import Policy, TaskSpec
from computenet.sched import batch
from computenet.sched.fairshare import units
from computenet.sched.pooltable import F64, I64, B, PoolTable, build_table
from computenet.sched.reservations import Reserved
from computenet.sched.types import Context, Decision, Estimate, PoolView, TaskView

NO_POOLS = "no pools are registered"
# What became of a task (Placements.status).
PLACED = 0
NO_OPTIONS = 1  # no healthy pool is eligible: the shape's reason says why
AT_QUOTA = 2
WAITING = 3  # eligible pools exist, none has room now
# Smaller rounds (a node's scheduling pass takes at most 2,000 tasks) run the reference round:
# for them the compiled loop saves tens of ms, less than what loading it costs a process
# (Numba: 0.3-1.5 s and about 130 MiB of memory; 7 s of CPU to compile on a fresh install).
COMPILED_FROM_TASKS = 10_000
# Option heap entries pack (pool version, candidate) into one int64: version << this | cand.
VERSION_SHIFT = 32


@dataclass(frozen=True)
class TaskBatch:
    """Pending tasks as columns: per task its shape (an index into ``specs``, one spec per
    distinct shape), tenant (an index into ``tenants``, which are sorted), priority and
    submission order."""

    specs: list[TaskSpec]
    shape: I64
    tenants: list[str]
    tenant: I64
    priority: I64
    seq: I64

    def __len__(self) -> int:
        return len(self.shape)

    @classmethod
    def of(cls, tasks: Sequence[TaskView]) -> TaskBatch:
        """Group ``tasks`` by shape key (the cached ``TaskView.shape`` when present)."""
        key = batch.shape_key
        ids: dict[object, int] = {}
        # shape ids in order of first appearance
        shape = [
            ids.setdefault(key(tv.spec) if tv.shape is None else tv.shape, len(ids)) for tv in tasks
        ]
        first = np.unique(np.array(shape, np.int64), return_index=True)[1].tolist()
        names = sorted({tv.tenant for tv in tasks})
        pos = {name: u for u, name in enumerate(names)}
        return cls(
            specs=[tasks[k].spec for k in first],
            shape=np.array(shape, np.int64),
            tenants=names,
            tenant=np.array([pos[tv.tenant] for tv in tasks], np.int64),
            priority=np.array([tv.priority for tv in tasks], np.int64),
            seq=np.array([tv.seq for tv in tasks], np.int64),
        )


@dataclass(frozen=True)
class Placements:
    """A round's outcome as columns, one row per decision in the order tasks were tried:
    the task (row of the batch), status (:data:`PLACED`, :data:`NO_OPTIONS`, :data:`AT_QUOTA`
    or :data:`WAITING`), pool index (-1 when none), variant and score, and for placed tasks
    their estimate's columns."""

    task: I64
    status: I64
    pool: I64
    variant: I64
    score: F64
    # Estimate columns, valid where status is PLACED.
    transfer_s: F64
    wait_s: F64
    run_s: F64
    cost: F64
    carbon_g: F64
    rtt_ms: F64
    reliability: F64
    speed_known: B
    reasons: list[str]  # per shape: why its tasks wait (no eligible pool, or no room)
    loop_s: float  # of the round's time, seconds in the compiled loop (the rest is NumPy)

    @property
    def placed(self) -> int:
        """How many tasks were placed."""
        return int((self.status == PLACED).sum())


@dataclass
class _Shapes:
    """Every shape's options (variants with candidates) flattened into arrays."""

    group_first: I64
    group_last: I64
    group_lw: F64
    group_units: F64
    opt_start: I64
    opt_end: I64
    opt_need: I64
    opt_units: F64
    opt_variant: I64
    cand_pool: I64
    cand_static: F64
    cand_opt: I64
    columns: dict[str, F64]  # estimates per candidate, by Estimate field
    speed_known: B
    reasons: list[str]


def _shapes(specs: list[TaskSpec], t: PoolTable, ctx: Context, policy: Policy | None) -> _Shapes:
    n = len(specs)
    group_first = np.zeros(n, np.int64)
    group_last = np.zeros(n, np.int64)
    group_lw = np.zeros(n)
    group_units = np.zeros(n)
    opt_need: list[int] = []
    opt_units: list[float] = []
    opt_variant: list[int] = []
    sizes: list[int] = []
    pools: list[I64] = []
    static: list[F64] = []
    cols: dict[str, list[F64]] = {c: [] for c in _ESTIMATE_COLUMNS}
    known: list[B] = []
    reasons: list[str] = []
    for g, spec in enumerate(specs):
        found = batch.candidates(spec, t, ctx, policy)
        group_first[g] = group_last[g] = len(sizes)
        if isinstance(found, str):
            reasons.append(found)
            continue
        parts, lw = found
        reasons.append(batch.waiting_reason(parts))
        group_lw[g] = lw
        first = parts[0][0]
        group_units[g] = units(first.cards, first.need.cpu_cores)
        for sh, e, scores in parts:
            need = sh.need
            opt_need.extend((need.accelerators, need.cpu_cores, need.memory_mib))
            opt_units.append(units(sh.cards, need.cpu_cores))
            opt_variant.append(sh.variant)
            sizes.append(len(e.idx))
            pools.append(e.idx)
            static.append(scores)
            for c in _ESTIMATE_COLUMNS:
                cols[c].append(getattr(e, c))
            known.append(e.speed_known)
        group_last[g] = len(sizes)
    ends = np.cumsum(np.array(sizes, np.int64))
    return _Shapes(
        group_first=group_first,
        group_last=group_last,
        group_lw=group_lw,
        group_units=group_units,
        opt_start=ends - np.array(sizes, np.int64),
        opt_end=ends,
        opt_need=np.array(opt_need, np.int64),
        opt_units=np.array(opt_units, np.float64),
        opt_variant=np.array(opt_variant, np.int64),
        cand_pool=_joined(pools, np.int64),
        cand_static=_joined(static, np.float64),
        cand_opt=np.repeat(np.arange(len(sizes), dtype=np.int64), sizes),
        columns={c: _joined(v, np.float64) for c, v in cols.items()},
        speed_known=_joined(known, np.bool_),
        reasons=reasons,
    )


_ESTIMATE_COLUMNS = (
    "transfer_s",
    "wait_s",
    "run_s",
    "cost",
    "carbon_g",
    "rtt_ms",
    "reliability",
)


def _joined(parts: Sequence[npt.NDArray[Any]], dtype: type[Any]) -> npt.NDArray[Any]:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def place(tasks: TaskBatch, t: PoolTable, ctx: Context, policy: Policy | None = None) -> Placements:
    """Decide a round for ``tasks`` on a non-empty table (no reservations, no preemptible
    running work: see :func:`covered`). The free capacity in ``t`` is not changed."""
    sh = _shapes(tasks.specs, t, ctx, policy)
    order = np.lexsort((tasks.seq, -tasks.priority))
    prio = tasks.priority[order]
    band_end = np.append(np.flatnonzero(prio[1:] != prio[:-1]) + 1, len(order)).astype(np.int64)
    names = sorted(set(tasks.tenants) | set(ctx.tenants))
    shares = [ctx.tenants.get(name) for name in names]
    held = np.array([s.usage if s else 0.0 for s in shares], np.float64)
    weight = np.array([s.weight if s else 1.0 for s in shares], np.float64)
    quota = np.array([s.quota if s and s.quota is not None else 0.0 for s in shares])
    has_quota = np.array([s is not None and s.quota is not None for s in shares], bool)
    remap = np.array([names.index(name) for name in tasks.tenants], np.int64)
    n = len(tasks)
    if n >= 1 << (VERSION_SHIFT - 1) or len(t) >= 1 << VERSION_SHIFT:
        raise ValueError("a round takes under 2**31 tasks on under 2**32 pools")
    tenant = remap[tasks.tenant] if n else tasks.tenant
    # The fair-share heap breaks ties in share by the queue head's seq, then tenant name.
    by_rank = np.lexsort((np.arange(n), tenant, tasks.seq)).astype(np.int64)
    rank = np.empty(n, np.int64)
    rank[by_rank] = np.arange(n)
    out_task = np.empty(n, np.int64)
    out_status = np.empty(n, np.int64)
    out_cand = np.empty(n, np.int64)
    out_value = np.empty(n, np.float64)
    # Imported here: Numba (LLVM) costs 0.3 s and about 100 MiB, only for processes that place.
    from computenet.sched.kernel import run_round

    loop_start = time.perf_counter()
    run_round(
        order.astype(np.int64),
        band_end,
        tasks.shape,
        tenant,
        rank,
        by_rank,
        sh.group_first,
        sh.group_last,
        sh.group_lw,
        sh.group_units,
        sh.opt_start,
        sh.opt_end,
        sh.opt_need,
        sh.opt_units,
        sh.cand_pool,
        sh.cand_static,
        t.free_cards.astype(np.float64),
        t.free_cpu.astype(np.float64),
        t.free_mem.astype(np.float64),
        t.total_cards.astype(np.float64),
        t.total_cpu.astype(np.float64),
        held,
        weight,
        quota,
        has_quota,
        len(names),
        out_task,
        out_status,
        out_cand,
        out_value,
    )
    loop_s = time.perf_counter() - loop_start
    placed = out_cand >= 0
    cand = np.where(placed, out_cand, 0)
    pool = np.where(placed, sh.cand_pool[cand] if len(sh.cand_pool) else -1, -1)
    variant = np.where(placed, sh.opt_variant[sh.cand_opt[cand]] if len(sh.cand_opt) else -1, -1)
    c = {k: v[cand] if len(v) else np.zeros(n) for k, v in sh.columns.items()}
    known = sh.speed_known[cand] if len(sh.speed_known) else np.zeros(n, bool)
    return Placements(
        task=out_task,
        status=out_status,
        pool=pool,
        variant=variant,
        score=out_value,
        transfer_s=c["transfer_s"],
        wait_s=c["wait_s"],
        run_s=c["run_s"],
        cost=c["cost"],
        carbon_g=c["carbon_g"],
        rtt_ms=c["rtt_ms"],
        reliability=c["reliability"],
        speed_known=known,
        reasons=sh.reasons,
        loop_s=loop_s,
    )


def covered(t: PoolTable, ctx: Context) -> bool:
    """Whether :func:`place` decides this round: no reservation holds cards of a pool in the
    table, and no running work there may be preempted."""
    if Reserved(ctx.reservations, t.index):
        return False
    return not any(r.preemptible and r.pool in t.index for r in ctx.running)


_NEW = object.__new__
_SET = object.__setattr__


def _estimate(
    pool: str,
    variant: int,
    transfer_s: float,
    wait_s: float,
    run_s: float,
    cost: float,
    carbon_g: float,
    rtt_ms: float,
    reliability: float,
    score: float,
    speed_known: bool,
) -> Estimate:
    """``Estimate(...)``, built the way a frozen dataclass cannot build itself quickly: its
    ``__init__`` sets each field through ``object.__setattr__`` (3 us for 11 fields on a
    2-core VM, most of a placement's budget); here the whole ``__dict__`` is set at once."""
    e = _NEW(Estimate)
    _SET(
        e,
        "__dict__",
        {
            "pool": pool,
            "variant": variant,
            "transfer_s": transfer_s,
            "wait_s": wait_s,
            "run_s": run_s,
            "cost": cost,
            "carbon_g": carbon_g,
            "rtt_ms": rtt_ms,
            "reliability": reliability,
            "score": score,
            "speed_known": speed_known,
        },
    )
    return e


def _decision(
    task_id: str, pool: str | None, reason: str, variant: int, estimate: Estimate | None
) -> Decision:
    """``Decision(task_id, pool, reason, variant, (), estimate)``, built as :func:`_estimate`
    builds."""
    d = _NEW(Decision)
    _SET(
        d,
        "__dict__",
        {
            "task_id": task_id,
            "pool": pool,
            "reason": reason,
            "variant": variant,
            "preempt": (),
            "estimate": estimate,
            "reservation": "",
        },
    )
    return d


# The two builders above name every field; a field added to either class must be added there.
if tuple(Estimate.__dataclass_fields__) != tuple(_estimate.__code__.co_varnames[:11]) or tuple(
    Decision.__dataclass_fields__
) != ("task_id", "pool", "reason", "variant", "preempt", "estimate", "reservation"):
    raise ImportError("fastround's Estimate/Decision builders are out of date")


def decisions(
    tasks: Sequence[TaskView], tb: TaskBatch, p: Placements, t: PoolTable
) -> list[Decision]:
    """The :class:`Decision` of every task, in the order they were tried."""
    cpis = t.cpis
    reasons = p.reasons
    shape = tb.shape.tolist()
    out: list[Decision] = []
    append = out.append
    for x, status, i, v, value, a, b, c, d, e, f, g, known in zip(
        p.task.tolist(),
        p.status.tolist(),
        p.pool.tolist(),
        p.variant.tolist(),
        p.score.tolist(),
        p.transfer_s.tolist(),
        p.wait_s.tolist(),
        p.run_s.tolist(),
        p.cost.tolist(),
        p.carbon_g.tolist(),
        p.rtt_ms.tolist(),
        p.reliability.tolist(),
        p.speed_known.tolist(),
        strict=True,
    ):
        tv = tasks[x]
        if status == PLACED:
            cpi = cpis[i]
            est = _estimate(cpi, v, a, b, c, d, e, f, g, value, known)
            append(_decision(tv.task_id, cpi, "", v, est))
        elif status == AT_QUOTA:
            quota = f"tenant {tv.tenant or 'default'} is at its quota"
            append(_decision(tv.task_id, None, quota, -1, None))
        else:
            append(_decision(tv.task_id, None, reasons[shape[x]], -1, None))
    return out


def schedule(
    tasks: Iterable[TaskView],
    pools: Sequence[PoolView] | PoolTable,
    ctx: Context | None = None,
    policy: Policy | None = None,
) -> list[Decision]:
    """Place ``tasks`` on ``pools``, consuming free capacity as it goes; one decision per
    task, in the order they were tried.

    ``policy`` overrides every task's own. Tasks are tried by priority, then weighted fair
    share between tenants (:mod:`computenet.sched.fairshare`). A non-preemptible task that
    finds no room may preempt preemptible work in ``ctx.running``; the decision lists it.
    Rounds of :data:`COMPILED_FROM_TASKS` tasks or more run the compiled loop
    (:func:`compiled_round`), smaller ones the reference round: the decisions are the same.
    """
    ctx = ctx or Context()
    t = pools if isinstance(pools, PoolTable) else build_table(pools, ctx)
    task_list = list(tasks)
    if len(t) == 0:
        return [Decision(tv.task_id, None, NO_POOLS) for tv in task_list]
    if len(task_list) < COMPILED_FROM_TASKS or not covered(t, ctx):
        return batch.schedule(task_list, t, ctx, policy)
    return compiled_round(task_list, t, ctx, policy)


def compiled_round(
    tasks: Sequence[TaskView], t: PoolTable, ctx: Context, policy: Policy | None = None
) -> list[Decision]:
    """:func:`schedule` through :func:`place`, whatever the round's size (on a non-empty
    table, a round :func:`covered` says it decides)."""
    # Building the decisions allocates many small objects and no reference cycles; with the
    # cyclic collector paused it does not repeatedly walk every live object (all the parsed
    # task specs), which otherwise costs up to half of a large round.
    collecting = gc.isenabled()
    gc.disable()
    try:
        tb = TaskBatch.of(tasks)
        return decisions(tasks, tb, place(tb, t, ctx, policy), t)
    finally:
        if collecting:
            gc.enable()


def warm_up() -> float:
    """Compile the round's loop now (or load it from Numba's on-disk cache), so that the
    first real round does not wait for it; seconds taken. A fresh install compiles once
    (several seconds on 2 cores); ``make`` calls this right after installing."""
    t0 = time.perf_counter()
    ctx = Context()
    place(TaskBatch.of([]), build_table([], ctx), ctx)  # same argument types as any round
    return time.perf_counter() - t0
