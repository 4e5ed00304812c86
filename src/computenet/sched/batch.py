"""One scheduling round, the reference: place many pending tasks at once, in Python.

Tasks of the same shape share one vectorized constraint check, one set of estimates and
one lazily-updated heap of candidate pools, so a round costs about one NumPy pass per shape
plus a few heap operations per task. :mod:`computenet.sched.fastround` runs large rounds
through a compiled loop that decides exactly as this one; this one runs small rounds and
those with advance reservations or preemptible running work, and is what tests compare with.
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from computenet.model.task import Policy, TaskSpec
from computenet.sched.constraints import Shape, eligible_mask, rule_masks
from computenet.sched.estimates import Estimates, estimate
from computenet.sched.explain import _concat, describe, shapes
from computenet.sched.fairshare import FairShare, units
from computenet.sched.policies import load_weight, score
from computenet.sched.pooltable import F64, PoolTable, build_table
from computenet.sched.reservations import Hold, Reserved, limit_of
from computenet.sched.types import Context, Decision, Estimate, PoolView, RunningTask, TaskView


@dataclass
class _Option:
    """One shape of a group: its candidate heap and static scores by pool index."""

    shape: Shape
    est: Estimates
    static: dict[int, float]
    pos: dict[int, int]
    heap: list[tuple[float, int, int]]
    need: tuple[int, int, int] = (0, 0, 0)  # cards, cores, MiB
    columns: list[list[float]] = field(default_factory=list)  # estimates as lists, fast to index
    limit_s: float = 0.0  # how long it may run (inf without a time limit): for reservations
    speed_known: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.shape.need
        self.need = (n.accelerators, n.cpu_cores, n.memory_mib)
        self.limit_s = limit_of(self.shape.spec.resources.time_limit_s)
        e = self.est
        self.columns = [
            c.tolist()
            for c in (e.transfer_s, e.wait_s, e.run_s, e.cost, e.carbon_g, e.rtt_ms, e.reliability)
        ]
        self.speed_known = e.speed_known.tolist()

    def estimate(self, cpi: str, i: int, value: float) -> Estimate:
        """The estimate for pool index ``i`` of this option."""
        j = self.pos[i]
        c = self.columns
        return Estimate(
            cpi,
            self.shape.variant,
            c[0][j],
            c[1][j],
            c[2][j],
            c[3][j],
            c[4][j],
            c[5][j],
            c[6][j],
            value,
            self.speed_known[j],
        )


@dataclass
class _Group:
    """Everything shared by the pending tasks of one shape."""

    options: list[_Option]
    reason: str
    load_weight: float = 0.0


def shape_key(spec: TaskSpec) -> object:
    """A hashable key equal for tasks that place identically (same requirements). Callers
    that keep parsed specs may compute it once and pass it as ``TaskView.shape``."""
    r = spec.resources
    p = spec.placement
    acc = r.accelerator
    sw = r.software
    return (
        r.cpu_cores,
        r.ram_gb,
        (acc.vendor, acc.model, acc.count, acc.min_memory_gib) if acc else None,
        r.architecture,
        (sw.driver, sw.cuda, sw.cann, sw.container_runtime) if sw else None,
        r.time_limit_s,
        tuple(p.regions),
        tuple(p.regions_deny),
        p.policy,
        p.max_price_per_card_hour,
        p.pool,
        tuple(p.datasets),
        p.runtime_hint_s,
        p.hint_model,
        p.workload,
        tuple(sorted(p.labels.items())),
        p.origin_region,
        tuple(v.model_dump_json() for v in spec.variants),
        spec.needs(),
    )


Candidates = tuple[list[tuple[Shape, Estimates, F64]], float]


def candidates(
    spec: TaskSpec, t: PoolTable, ctx: Context, policy: Policy | None
) -> Candidates | str:
    """What a round needs of one shape, before any capacity is taken: per variant with
    healthy eligible pools, its estimates and static scores over them, and the policy's load
    weight; or, when no pool can take it, the reason."""
    policy = policy or spec.placement.policy
    parts: list[tuple[Shape, Estimates]] = []
    counts: dict[str, int] = {}
    eligible_any = 0
    for sh in shapes(spec):
        masks = rule_masks(sh, t)
        ok = eligible_mask(masks, len(t))
        if int(ok.sum()) >= eligible_any:
            counts = {r: int(m.sum()) for r, m in masks.items() if m.any()}
        eligible_any = max(eligible_any, int(ok.sum()))
        idx = np.flatnonzero(ok & t.healthy)
        if len(idx):
            parts.append((sh, estimate(sh, t, idx, ctx, np.ones(len(idx)))))
    if not eligible_any:
        return describe(spec, counts, t)
    if not parts:
        return f"all {eligible_any} eligible pools are unhealthy"
    scores = score(policy, _concat([e for _, e in parts]))
    out = []
    k = 0
    for sh, e in parts:
        out.append((sh, e, scores[k : k + len(e.idx)]))
        k += len(e.idx)
    return out, load_weight(policy)


def waiting_reason(parts: list[tuple[Shape, Estimates, F64]]) -> str:
    """Why a task with eligible healthy pools waits when none has room."""
    pools = set().union(*(e.idx.tolist() for _, e, _ in parts))
    return f"waiting for capacity on {len(pools)} eligible pools"


class _Round:
    """Mutable state of one round: free capacity and per-pool versions for lazy heaps."""

    def __init__(self, t: PoolTable, ctx: Context, policy: Policy | None) -> None:
        self.t = t
        self.ctx = ctx
        self.policy = policy
        self.cpu: list[float] = t.free_cpu.tolist()
        self.mem: list[float] = t.free_mem.tolist()
        self.cards: list[float] = t.free_cards.tolist()
        self.total_cards: list[float] = t.total_cards.tolist()
        self.total_cpu: list[float] = t.total_cpu.tolist()
        self.version = [0] * len(t)
        self.groups: dict[object, _Group] = {}
        self.reserved = Reserved(ctx.reservations, t.index)

    def util(self, i: int) -> float:
        if self.total_cards[i] > 0:
            return 1.0 - self.cards[i] / self.total_cards[i]
        return 1.0 - self.cpu[i] / max(self.total_cpu[i], 1.0)

    def group(self, tv: TaskView) -> _Group:
        key = (self.policy, shape_key(tv.spec) if tv.shape is None else tv.shape)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = self._build(tv.spec)
        return g

    def _build(self, spec: TaskSpec) -> _Group:
        found = candidates(spec, self.t, self.ctx, self.policy)
        if isinstance(found, str):
            return _Group([], found)
        parts, lw = found
        options = []
        for sh, e, scores in parts:
            idx_list = e.idx.tolist()
            static = dict(zip(idx_list, scores.tolist(), strict=True))
            heap = [(v + lw * self.util(i), self.version[i], i) for i, v in static.items()]
            heapq.heapify(heap)
            pos = {i: j for j, i in enumerate(idx_list)}
            options.append(_Option(sh, e, static, pos, heap))
        return _Group(options, waiting_reason(parts), lw)

    def open_cards(self, i: int, opt: _Option) -> float:
        """Cards of pool ``i`` that ``opt`` may take outside any reservation."""
        if not self.reserved:
            return self.cards[i]
        return self.cards[i] - self.reserved.held(i, opt.limit_s, opt.need[0])

    def best(self, opt: _Option, lw: float) -> tuple[float, int] | None:
        """The best pool of ``opt`` that fits now, fixing stale heap entries on the way."""
        heap = opt.heap
        cards, cpu, mem = opt.need
        plain = not self.reserved  # the common case stays one list lookup per check
        while heap:
            value, ver, i = heap[0]
            free = self.cards[i] if plain else self.open_cards(i, opt)
            if free < cards or self.cpu[i] < cpu or self.mem[i] < mem:
                heapq.heappop(heap)  # capacity only shrinks within a round
                continue
            if ver != self.version[i]:
                heapq.heapreplace(heap, (opt.static[i] + lw * self.util(i), self.version[i], i))
                continue
            return value, i
        return None

    def covered(self, opt: _Option, tenant: str) -> tuple[float, int, Hold] | None:
        """The best pool where one of the tenant's reservations under way can take ``opt``."""
        cards, cpu, mem = opt.need
        found = None
        for i, hold in self.reserved.covering_pools(tenant, opt.limit_s, cards):
            if (
                i not in opt.static
                or self.cards[i] < cards
                or self.cpu[i] < cpu
                or self.mem[i] < mem
            ):
                continue
            if found is None or opt.static[i] < found[0]:
                found = (opt.static[i], i, hold)
        return found

    def take(self, i: int, opt: _Option, hold: Hold | None = None) -> None:
        cards, cpu, mem = opt.need
        if hold is not None:
            hold.free_cards -= cards
        self.cards[i] -= cards
        self.cpu[i] -= cpu
        self.mem[i] -= mem
        self.version[i] += 1


def schedule(
    tasks: Iterable[TaskView],
    pools: Sequence[PoolView] | PoolTable,
    ctx: Context | None = None,
    policy: Policy | None = None,
) -> list[Decision]:
    """Place ``tasks`` on ``pools``, consuming free capacity as it goes; one decision per task.

    ``policy`` overrides every task's own. Tasks are tried by priority, then weighted fair
    share between tenants (:mod:`computenet.sched.fairshare`). A non-preemptible task that
    finds no room may preempt preemptible work in ``ctx.running``; the decision lists it.
    """
    ctx = ctx or Context()
    t = pools if isinstance(pools, PoolTable) else build_table(pools, ctx)
    task_list = list(tasks)
    if len(t) == 0:
        return [Decision(tv.task_id, None, "no pools are registered") for tv in task_list]
    # A round allocates a few small objects per task and creates no reference cycles; with
    # the cyclic collector paused it does not repeatedly walk every live object (all the
    # parsed task specs), which otherwise costs up to half of a large round.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _place(task_list, t, ctx, policy)
    finally:
        if collecting:
            gc.enable()


def _place(
    task_list: list[TaskView], t: PoolTable, ctx: Context, policy: Policy | None
) -> list[Decision]:
    rnd = _Round(t, ctx, policy)
    fair = FairShare(dict(ctx.tenants))
    victims = _Victims(ctx.running, t)
    out: list[Decision] = []
    for tv in fair.order(task_list):
        g = rnd.group(tv)
        if not g.options:
            out.append(Decision(tv.task_id, None, g.reason))
            continue
        lw = g.load_weight
        first = g.options[0].shape
        amount = units(first.cards, first.need.cpu_cores)
        if not fair.within_quota(tv.tenant, amount):
            out.append(
                Decision(tv.task_id, None, f"tenant {tv.tenant or 'default'} is at its quota")
            )
            continue
        if rnd.reserved:
            on_reservation = _on_reservation(tv, g, rnd)
            if on_reservation is not None:
                decision, shape = on_reservation
                fair.grant(tv.tenant, units(shape.cards, shape.need.cpu_cores))
                out.append(decision)
                continue
        best: tuple[float, int, _Option] | None = None
        for opt in g.options:
            found = rnd.best(opt, lw)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], found[1], opt)
        if best is not None:
            value, i, opt = best
            rnd.take(i, opt)
            fair.grant(tv.tenant, units(opt.shape.cards, opt.shape.need.cpu_cores))
            est = opt.estimate(t.cpis[i], i, value)
            out.append(Decision(tv.task_id, t.cpis[i], "", opt.shape.variant, (), est))
            continue
        preempted = None if tv.spec.resources.preemptible else victims.find(tv, g, rnd)
        if preempted is not None:
            i, opt, chosen = preempted
            rnd.take(i, opt)
            fair.grant(tv.tenant, units(opt.shape.cards, opt.shape.need.cpu_cores))
            est = opt.estimate(t.cpis[i], i, opt.static[i])
            out.append(Decision(tv.task_id, t.cpis[i], "", opt.shape.variant, chosen, est))
            continue
        out.append(Decision(tv.task_id, None, _waiting(g, rnd)))
    return out


def _on_reservation(tv: TaskView, g: _Group, rnd: _Round) -> tuple[Decision, Shape] | None:
    """Place ``tv`` on one of its tenant's reservations under way, when one can take it:
    those cards are already paid for, so they come before any open capacity."""
    best: tuple[float, int, Hold, _Option] | None = None
    for opt in g.options:
        found = rnd.covered(opt, tv.tenant)
        if found is not None and (best is None or found[0] < best[0]):
            best = (*found, opt)
    if best is None:
        return None
    value, i, hold, opt = best
    rnd.take(i, opt, hold)
    est = opt.estimate(rnd.t.cpis[i], i, value)
    decision = Decision(
        tv.task_id, rnd.t.cpis[i], "", opt.shape.variant, (), est, hold.reservation_id
    )
    return decision, opt.shape


def _waiting(g: _Group, rnd: _Round) -> str:
    """Why a task that found no room waits, naming reservations when they hold cards back."""
    if not rnd.reserved or not g.options:
        return g.reason
    opt = g.options[0]
    if opt.need[0] <= 0:
        return g.reason
    cards, pools = rnd.reserved.blocking(sorted(opt.static), opt.limit_s)
    if not cards:
        return g.reason
    hint = (
        "; without a time limit a task overlaps every reservation to come"
        if opt.limit_s == float("inf")
        else ""
    )
    return f"{g.reason}; {cards} cards on {pools} of them are reserved over its run{hint}"


class _Victims:
    """Preemptible running work, by pool, that on-demand tasks may displace."""

    def __init__(self, running: Sequence[RunningTask], t: PoolTable) -> None:
        self.by_pool: dict[int, list[RunningTask]] = {}
        for r in running:
            i = t.index.get(r.pool)
            if r.preemptible and i is not None:
                self.by_pool.setdefault(i, []).append(r)
        for lst in self.by_pool.values():
            lst.sort(key=lambda r: r.priority)  # lowest priority goes first

    def find(
        self, tv: TaskView, g: _Group, rnd: _Round
    ) -> tuple[int, _Option, tuple[str, ...]] | None:
        """The best pool where evicting preemptible work of no higher priority makes room."""
        if not self.by_pool:
            return None
        ranked = sorted(
            ((opt.static[i], i, opt) for opt in g.options for i in opt.static if i in self.by_pool),
            key=lambda x: x[0],
        )
        for _, i, opt in ranked:
            need = opt.shape.need
            cards, cpu, mem = rnd.open_cards(i, opt), rnd.cpu[i], rnd.mem[i]
            chosen: list[RunningTask] = []
            for r in self.by_pool[i]:
                if cards >= need.accelerators and cpu >= need.cpu_cores and mem >= need.memory_mib:
                    break
                if r.priority > tv.priority:
                    break
                chosen.append(r)
                cards += r.need.accelerators
                cpu += r.need.cpu_cores
                mem += r.need.memory_mib
            if cards >= need.accelerators and cpu >= need.cpu_cores and mem >= need.memory_mib:
                for r in chosen:
                    self.by_pool[i].remove(r)
                    rnd.cards[i] += r.need.accelerators
                    rnd.cpu[i] += r.need.cpu_cores
                    rnd.mem[i] += r.need.memory_mib
                return i, opt, tuple(r.task_id for r in chosen)
        return None
