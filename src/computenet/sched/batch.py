"""One scheduling round: place many pending tasks at once.

Tasks of the same shape share one vectorized constraint check, one set of estimates and
one lazily-updated heap of candidate pools, so a round costs about one NumPy pass per shape
plus a few heap operations per task.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from computenet.model.task import Policy, TaskSpec
from computenet.sched.constraints import Shape, eligible_mask, rule_masks
from computenet.sched.estimates import Estimates, estimate
from computenet.sched.explain import _concat, describe, shapes, to_estimate
from computenet.sched.fairshare import FairShare, units
from computenet.sched.policies import load_weight, score
from computenet.sched.pooltable import PoolTable, build_table
from computenet.sched.types import Context, Decision, PoolView, RunningTask, TaskView


@dataclass
class _Option:
    """One shape of a group: its candidate heap and static scores by pool index."""

    shape: Shape
    est: Estimates
    static: dict[int, float]
    pos: dict[int, int]
    heap: list[tuple[float, int, int]]


@dataclass
class _Group:
    """Everything shared by the pending tasks of one shape."""

    options: list[_Option]
    reason: str
    eligible_idx: list[int] = field(default_factory=list)


def shape_key(spec: TaskSpec, policy: Policy | None) -> object:
    """A hashable key equal for tasks that place identically (same requirements)."""
    r = spec.resources
    p = spec.placement
    acc = r.accelerator
    return (
        r.cpu_cores,
        r.ram_gb,
        (acc.vendor, acc.model, acc.count, acc.min_memory_gib) if acc else None,
        r.architecture,
        r.software.model_dump_json() if r.software else None,
        r.time_limit_s,
        tuple(p.regions),
        tuple(p.regions_deny),
        policy or p.policy,
        p.max_price_per_card_hour,
        p.pool,
        tuple(p.datasets),
        p.runtime_hint_s,
        p.hint_model,
        p.workload,
        tuple(sorted(p.labels.items())),
        p.origin_region,
        tuple(v.model_dump_json() for v in spec.variants),
    )


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

    def util(self, i: int) -> float:
        if self.total_cards[i] > 0:
            return 1.0 - self.cards[i] / self.total_cards[i]
        return 1.0 - self.cpu[i] / max(self.total_cpu[i], 1.0)

    def fits(self, i: int, sh: Shape) -> bool:
        n = sh.need
        return (
            self.cards[i] >= n.accelerators
            and self.cpu[i] >= n.cpu_cores
            and self.mem[i] >= n.memory_mib
        )

    def group(self, spec: TaskSpec) -> _Group:
        key = shape_key(spec, self.policy)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = self._build(spec)
        return g

    def _build(self, spec: TaskSpec) -> _Group:
        t = self.t
        policy = self.policy or spec.placement.policy
        parts: list[tuple[Shape, Estimates]] = []
        counts: dict[str, int] = {}
        eligible_any = 0
        healthy_idx: list[int] = []
        for sh in shapes(spec):
            masks = rule_masks(sh, t)
            ok = eligible_mask(masks, len(t))
            if int(ok.sum()) >= eligible_any:
                counts = {r: int(m.sum()) for r, m in masks.items() if m.any()}
            eligible_any = max(eligible_any, int(ok.sum()))
            idx = np.flatnonzero(ok & t.healthy)
            healthy_idx.extend(idx.tolist())
            if len(idx):
                parts.append((sh, estimate(sh, t, idx, self.ctx, np.ones(len(idx)))))
        if not eligible_any:
            return _Group([], describe(spec, counts, t))
        if not parts:
            return _Group([], f"all {eligible_any} eligible pools are unhealthy")
        scores = score(policy, _concat([e for _, e in parts]))
        lw = load_weight(policy)
        options = []
        k = 0
        for sh, e in parts:
            idx_list = e.idx.tolist()
            s = scores[k : k + len(idx_list)].tolist()
            k += len(idx_list)
            static = dict(zip(idx_list, s, strict=True))
            heap = [(v + lw * self.util(i), self.version[i], i) for i, v in static.items()]
            heapq.heapify(heap)
            pos = {i: j for j, i in enumerate(idx_list)}
            options.append(_Option(sh, e, static, pos, heap))
        reason = f"waiting for capacity on {len(set(healthy_idx))} eligible pools"
        return _Group(options, reason, sorted(set(healthy_idx)))

    def best(self, opt: _Option, lw: float) -> tuple[float, int] | None:
        """The best pool of ``opt`` that fits now, fixing stale heap entries on the way."""
        heap = opt.heap
        while heap:
            value, ver, i = heap[0]
            if not self.fits(i, opt.shape):
                heapq.heappop(heap)  # capacity only shrinks within a round
                continue
            if ver != self.version[i]:
                heapq.heapreplace(heap, (opt.static[i] + lw * self.util(i), self.version[i], i))
                continue
            return value, i
        return None

    def take(self, i: int, sh: Shape, sign: float = 1.0) -> None:
        n = sh.need
        self.cards[i] -= sign * n.accelerators
        self.cpu[i] -= sign * n.cpu_cores
        self.mem[i] -= sign * n.memory_mib
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
    rnd = _Round(t, ctx, policy)
    fair = FairShare(dict(ctx.tenants))
    victims = _Victims(ctx.running, t)
    out: list[Decision] = []
    task_list = list(tasks)
    if len(t) == 0:
        return [Decision(tv.task_id, None, "no pools are registered") for tv in task_list]
    for tv in fair.order(task_list):
        g = rnd.group(tv.spec)
        if not g.options:
            out.append(Decision(tv.task_id, None, g.reason))
            continue
        lw = load_weight(policy or tv.spec.placement.policy)
        first = g.options[0].shape
        amount = units(first.cards, first.need.cpu_cores)
        if not fair.within_quota(tv.tenant, amount):
            out.append(
                Decision(tv.task_id, None, f"tenant {tv.tenant or 'default'} is at its quota")
            )
            continue
        best: tuple[float, int, _Option] | None = None
        for opt in g.options:
            found = rnd.best(opt, lw)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], found[1], opt)
        if best is not None:
            value, i, opt = best
            rnd.take(i, opt.shape)
            fair.grant(tv.tenant, units(opt.shape.cards, opt.shape.need.cpu_cores))
            est = to_estimate(t, opt.est, opt.pos[i], opt.shape.variant, value)
            out.append(Decision(tv.task_id, t.cpis[i], "", opt.shape.variant, (), est))
            continue
        preempted = None if tv.spec.resources.preemptible else victims.find(tv, g, rnd)
        if preempted is not None:
            i, opt, chosen = preempted
            rnd.take(i, opt.shape)
            fair.grant(tv.tenant, units(opt.shape.cards, opt.shape.need.cpu_cores))
            est = to_estimate(t, opt.est, opt.pos[i], opt.shape.variant, opt.static[i])
            out.append(Decision(tv.task_id, t.cpis[i], "", opt.shape.variant, chosen, est))
            continue
        out.append(Decision(tv.task_id, None, g.reason))
    return out


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
            cards, cpu, mem = rnd.cards[i], rnd.cpu[i], rnd.mem[i]
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
