"""Explanations and discovery: what each constraint excluded, and ranked offers.

``rank_offers`` is the discovery query (``GET /api/v1/offers``, ``computenet find``);
``explain`` adds the per-rule exclusion counts that say why a task waits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from computenet.model.catalog import load_catalog
from computenet.model.task import Policy, TaskSpec
from computenet.sched.constraints import (
    Shape,
    eligible_mask,
    models_matching,
    rule_masks,
    shape_of,
)
from computenet.sched.estimates import REFERENCE_MODEL, Estimates, estimate
from computenet.sched.policies import score
from computenet.sched.pooltable import F64, B, PoolTable, build_table
from computenet.sched.types import Context, Estimate, Explanation, PoolView

DEFAULT_LIMIT = 20


def shapes(spec: TaskSpec) -> list[Shape]:
    """The shapes a task can run as: one per variant, or the task as written."""
    if spec.variants:
        return [shape_of(spec, i) for i in range(len(spec.variants))]
    return [shape_of(spec, -1)]


def describe(spec: TaskSpec, counts: dict[str, int], t: PoolTable) -> str:
    """Turn per-rule exclusion counts into one sentence a user can act on."""
    if len(t) == 0:
        return "no pools are registered"
    res = spec.resources
    acc = res.accelerator
    parts: list[str] = []

    def pools_n(n: int) -> str:
        return f"{n} pool" if n == 1 else f"{n} pools"

    if acc is not None and (counts.get("accelerator") or counts.get("gang")):
        n = max(counts.get("accelerator", 0), counts.get("gang", 0))
        # A model no pool has and the catalog does not know is most likely misspelled.
        unknown = None
        if acc.model and not models_matching(acc.model, t):
            unknown = load_catalog().unknown_model(acc.model)
        if unknown is not None:
            parts.append(unknown.split("; known models")[0])
        else:
            what = acc.model or (f"{acc.vendor} accelerator" if acc.vendor else "accelerator")
            cards = "card" if acc.count == 1 else "cards in one pool"
            parts.append(f"no pool has {acc.count} {what} {cards} ({pools_n(n)} checked)")
    for rule, n in counts.items():
        if not n or rule in ("accelerator", "gang", "pinned"):
            continue
        if rule == "accelerator_memory" and acc is not None:
            parts.append(f"{pools_n(n)}: accelerators under {acc.min_memory_gib} GiB")
        elif rule == "cpu":
            parts.append(f"no machine has {res.cpu_cores} CPU cores ({pools_n(n)} too small)")
        elif rule == "memory":
            parts.append(f"no machine has {res.ram_gb:g} GB of memory ({pools_n(n)} too small)")
        elif rule == "region":
            parts.append(f"{pools_n(n)} outside the allowed regions")
        elif rule == "price":
            prices = t.price_card if acc is not None else t.price_core
            cap = float(spec.max_price() or 0)
            parts.append(
                f"price cap {spec.max_price()} is below every offer "
                f"(cheapest {float(prices[prices > cap].min()):g}; {pools_n(n)} over the cap)"
            )
        elif rule == "architecture":
            parts.append(f"{pools_n(n)} not {res.architecture}")
        elif rule == "software":
            parts.append(f"{pools_n(n)} with older driver/CUDA/CANN than required")
        elif rule == "container_runtime" and res.software is not None:
            parts.append(f"{pools_n(n)} without {res.software.container_runtime}")
        elif rule == "labels":
            parts.append(f"{pools_n(n)} without the required labels")
        elif rule == "capability":
            parts.append(f"{pools_n(n)} cannot do what the task needs: {_lacking(spec, t)}")
    pinned = spec.placement.pool
    if pinned is not None and pinned not in t.index:
        parts.insert(0, f"pinned pool {pinned} is not registered")
    return "; ".join(parts) or "no pool satisfies the task's constraints"


def _lacking(spec: TaskSpec, t: PoolTable) -> str:
    """The capabilities the task needs that pools lack, each with its first reason."""
    needs = {c.value for c in spec.needs()}
    why: dict[str, str] = {}
    for unsupported in t.unsupported:
        for cap, reason in unsupported.items():
            if cap in needs:
                why.setdefault(cap, reason)
    return ", ".join(f"{cap} ({reason})" for cap, reason in sorted(why.items()))


Scored = tuple[list[tuple[Shape, B, dict[str, B]]], list[tuple[int, Estimates]], F64]


def _scored(
    spec: TaskSpec, t: PoolTable, ctx: Context, policy: Policy, healthy_only: bool
) -> Scored:
    """Masks per shape, column estimates per shape over its eligible pools, joint scores."""
    per_shape = []
    parts: list[tuple[int, Estimates]] = []
    for sh in shapes(spec):
        masks = rule_masks(sh, t)
        ok = eligible_mask(masks, len(t))
        if healthy_only:
            ok &= t.healthy
        per_shape.append((sh, ok, masks))
        idx = np.flatnonzero(ok)
        if len(idx):
            fits = (
                (t.free_cards[idx] >= sh.cards)
                & (t.free_cpu[idx] >= sh.need.cpu_cores)
                & (t.free_mem[idx] >= sh.need.memory_mib)
            )
            parts.append((sh.variant, estimate(sh, t, idx, ctx, fits.astype(np.float64))))
    if not parts:
        return per_shape, parts, np.zeros(0)
    return per_shape, parts, score(policy, _concat([e for _, e in parts]))


def _top(
    t: PoolTable, parts: list[tuple[int, Estimates]], scores: F64, limit: int
) -> list[Estimate]:
    """The ``limit`` best candidates, best first (ties by CPI)."""
    if len(scores) > limit:
        chosen = np.argpartition(scores, limit)[:limit]
    else:
        chosen = np.arange(len(scores))
    starts = np.cumsum([0] + [len(e.idx) for _, e in parts])
    out = []
    for k in chosen:
        part = int(np.searchsorted(starts, k, side="right")) - 1
        variant, e = parts[part]
        out.append(to_estimate(t, e, int(k - starts[part]), variant, float(scores[k])))
    return sorted(out, key=lambda c: (c.score, c.pool))


def _concat(es: Sequence[Estimates]) -> Estimates:
    if len(es) == 1:
        return es[0]
    fields = Estimates.__dataclass_fields__
    return Estimates(**{f: np.concatenate([getattr(e, f) for e in es]) for f in fields})


def to_estimate(t: PoolTable, e: Estimates, j: int, variant: int, value: float) -> Estimate:
    """Row ``j`` of column estimates as an :class:`Estimate`."""
    return Estimate(
        t.cpis[int(e.idx[j])],
        variant,
        float(e.transfer_s[j]),
        float(e.wait_s[j]),
        float(e.run_s[j]),
        float(e.cost[j]),
        float(e.carbon_g[j]),
        float(e.rtt_ms[j]),
        float(e.reliability[j]),
        value,
        bool(e.speed_known[j]),
    )


def rank_offers(
    template: TaskSpec,
    pools: Sequence[PoolView] | PoolTable,
    ctx: Context | None = None,
    policy: Policy | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[Estimate]:
    """Healthy pools that satisfy ``template``, best first under ``policy`` (default: the
    template's own), each with estimated start, run time, cost and carbon."""
    ctx = ctx or Context()
    t = pools if isinstance(pools, PoolTable) else build_table(pools, ctx)
    pol = policy or template.placement.policy
    _, parts, scores = _scored(template, t, ctx, pol, healthy_only=True)
    return _top(t, parts, scores, limit)


def explain(
    task_id: str,
    spec: TaskSpec,
    pools: Sequence[PoolView] | PoolTable,
    ctx: Context | None = None,
    limit: int = 5,
) -> Explanation:
    """Each rule with the pools it excluded (for the shape with most eligible pools), how
    many pools remain eligible, and the best candidates with their estimates and scores."""
    ctx = ctx or Context()
    t = pools if isinstance(pools, PoolTable) else build_table(pools, ctx)
    policy = spec.placement.policy
    per_shape, parts, scores = _scored(spec, t, ctx, policy, healthy_only=False)
    _, _, masks = max(per_shape, key=lambda x: int(x[1].sum()))
    counts = {rule: int(m.sum()) for rule, m in masks.items() if m.any()}
    eligible = int(sum(int(x[1].sum()) for x in per_shape))
    reason = "" if eligible else describe(spec, counts, t)
    cands = _top(t, parts, scores, limit)
    note = speed_note(sum(int((~e.speed_known).sum()) for _, e in parts), len(scores), spec)
    return Explanation(task_id, policy.value, len(t), counts, eligible, cands, reason, note)


def speed_note(unknown: int, total: int, spec: TaskSpec) -> str:
    """The sentence ``explain`` adds when some candidates' speed is unknown ('' when none)."""
    if not unknown:
        return ""
    ref = spec.placement.hint_model or REFERENCE_MODEL
    return (
        f"speed unknown on {unknown} of {total} candidate pools (no catalog or measured "
        f"FP16 figure for that card or for {ref}, no measured speed for the workload): "
        "their run time is the task's declared run time, not an estimate"
    )
