"""Scheduler v0: a pure core. Events in (tasks, pools), decisions out; no I/O.

Placement is two steps: hard constraints filter the pools a task could ever use, then a
policy ranks those with free capacity now. When nothing is chosen the core says why, in
words a user can act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from computenet.model.pool import Capacity, PoolHealth, PoolSpec
from computenet.model.task import Policy, TaskSpec


@dataclass(frozen=True)
class PoolView:
    """What the scheduler knows of one pool: its description, health and free capacity."""

    cpi: str
    spec: PoolSpec
    health: PoolHealth
    free: Capacity


@dataclass(frozen=True)
class TaskView:
    """What the scheduler knows of one queued task."""

    task_id: str
    spec: TaskSpec
    priority: int = 0
    seq: int = 0  # submission order, for first-come-first-served among equals


@dataclass(frozen=True)
class Decision:
    """The outcome for one task: a pool, or the reason none was chosen."""

    task_id: str
    pool: str | None
    reason: str = ""


@dataclass
class _Rejections:
    """Counts of pools rejected by each hard constraint, to explain an unplaced task."""

    by_rule: dict[str, list[str]] = field(default_factory=dict)

    def add(self, rule: str, cpi: str) -> None:
        self.by_rule.setdefault(rule, []).append(cpi)


def _price(spec: PoolSpec, task: TaskSpec) -> Decimal:
    """The pool's hourly price for the unit the task is billed by."""
    if task.resources.accelerator:
        return spec.price_per_card_hour
    return spec.price_per_core_hour


def hard_reject(task: TaskSpec, pool: PoolView) -> str | None:
    """Return the first hard constraint ``pool`` fails for ``task`` (a short rule name), or None.

    Only permanent properties count here; free capacity and health are checked afterwards,
    so a rejection means the task can never run on that pool as it is described now.
    """
    spec = pool.spec
    res = task.resources
    place = task.placement
    if place.pool is not None and place.pool != pool.cpi:
        return "pinned"
    acc = res.accelerator
    if acc is not None:
        have = spec.accelerator
        if have is None:
            return "accelerator"
        if acc.vendor and acc.vendor.lower() != have.vendor.lower():
            return "accelerator"
        if acc.model and acc.model.lower() != have.model.lower():
            return "accelerator"
        if acc.min_memory_gib and have.memory_mib < acc.min_memory_gib * 1024:
            return "accelerator_memory"
        if acc.count > have.count * spec.machines:
            return "accelerator"
    need = res.need()
    total = spec.total()
    if need.cpu_cores > spec.cpu_cores or need.cpu_cores > total.cpu_cores:
        return "cpu"
    if need.memory_mib > spec.memory_mib:
        return "memory"
    if place.regions and not any(spec.region.within(r) for r in place.regions):
        return "region"
    if any(spec.region.within(r) for r in place.regions_deny):
        return "region"
    cap = task.max_price()
    if cap is not None and _price(spec, task) > cap:
        return "price"
    return None


def _describe(task: TaskSpec, rejections: _Rejections, pools: Sequence[PoolView]) -> str:
    """Turn per-rule rejection counts into one sentence a user can act on."""
    res = task.resources
    acc = res.accelerator
    if not pools:
        return "no pools are registered"
    parts: list[str] = []
    for rule, cpis in rejections.by_rule.items():
        n = len(cpis)
        pools_n = f"{n} pool" if n == 1 else f"{n} pools"
        if rule == "pinned":
            continue
        if rule == "accelerator" and acc is not None:
            what = acc.model or (f"{acc.vendor} accelerator" if acc.vendor else "accelerator")
            parts.append(f"no pool has {acc.count} x {what} ({pools_n} checked)")
        elif rule == "accelerator_memory" and acc is not None:
            parts.append(f"{pools_n}: accelerators under {acc.min_memory_gib} GiB")
        elif rule == "cpu":
            parts.append(f"no machine has {res.cpu_cores} CPU cores ({pools_n} too small)")
        elif rule == "memory":
            parts.append(f"no machine has {res.ram_gb:g} GB of memory ({pools_n} too small)")
        elif rule == "region":
            parts.append(f"{pools_n} outside the allowed regions")
        elif rule == "price":
            cheapest = min(_price(p.spec, task) for p in pools if p.cpi in cpis)
            parts.append(f"price cap {task.max_price()} is below every offer (cheapest {cheapest})")
    pinned = task.placement.pool
    if pinned is not None and not any(p.cpi == pinned for p in pools):
        parts.insert(0, f"pinned pool {pinned} is not registered")
    return "; ".join(parts) or "no pool satisfies the task's constraints"


def _rank_key(task: TaskSpec, pool: PoolView) -> tuple[Decimal | int, ...]:
    """Sort key under the task's policy: smaller is better."""
    price = _price(pool.spec, task)
    free_share = -pool.free.cpu_cores - pool.free.accelerators * 1000
    if task.placement.policy is Policy.CHEAPEST:
        return (price, free_share)
    # balanced: spread load first (most free capacity), then price
    return (free_share, price)


def schedule(tasks: Iterable[TaskView], pools: Sequence[PoolView]) -> list[Decision]:
    """Place ``tasks`` on ``pools`` in priority order, consuming free capacity as it goes.

    Returns one decision per task. A task with no eligible pool gets the reason; a task
    whose eligible pools are all busy or unhealthy gets a waiting reason.
    """
    free = {p.cpi: p.free for p in pools}
    out: list[Decision] = []
    for tv in sorted(tasks, key=lambda t: (-t.priority, t.seq)):
        task = tv.spec
        need = task.resources.need()
        rejections = _Rejections()
        eligible: list[PoolView] = []
        for pool in pools:
            rule = hard_reject(task, pool)
            if rule is None:
                eligible.append(pool)
            else:
                rejections.add(rule, pool.cpi)
        if not eligible:
            out.append(Decision(tv.task_id, None, _describe(task, rejections, pools)))
            continue
        healthy = [p for p in eligible if p.health is PoolHealth.HEALTHY]
        ready = [p for p in healthy if free[p.cpi].fits(need)]
        if not ready:
            if not healthy:
                reason = f"all {len(eligible)} eligible pools are unhealthy"
            else:
                reason = f"waiting for capacity on {len(healthy)} eligible pools"
            out.append(Decision(tv.task_id, None, reason))
            continue
        best = min(
            ready, key=lambda p: _rank_key(task, PoolView(p.cpi, p.spec, p.health, free[p.cpi]))
        )
        free[best.cpi] = free[best.cpi].minus(need)
        out.append(Decision(tv.task_id, best.cpi))
    return out
