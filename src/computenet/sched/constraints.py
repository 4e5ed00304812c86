"""Hard constraints, vectorized: for one task shape, which pools each rule excludes.

A rule's mask is True where the pool fails that rule. Rules are evaluated independently so an
explanation can say how many pools each one excluded on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from computenet.model.pool import Capacity
from computenet.model.task import SoftwareRequest, TaskSpec
from computenet.sched.pooltable import B, PoolTable, version_number
from computenet.sched.types import PoolView

RULES = (
    "pinned",
    "architecture",
    "accelerator",
    "accelerator_memory",
    "gang",
    "cpu",
    "memory",
    "software",
    "container_runtime",
    "region",
    "price",
    "labels",
    "capability",
)


@dataclass(frozen=True)
class Shape:
    """The requirement part of a task as one variant runs it: all placement depends on."""

    spec: TaskSpec  # the task with the variant applied
    variant: int
    need: Capacity

    @property
    def cards(self) -> int:
        """Accelerator cards the shape takes (0 for CPU work)."""
        return self.need.accelerators


def shape_of(spec: TaskSpec, variant: int) -> Shape:
    """The shape of ``spec`` run as ``variant`` (-1 = as written)."""
    applied = spec.with_variant(variant)
    return Shape(applied, variant, applied.resources.need())


def _fold(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def models_matching(want: str, t: PoolTable) -> list[int]:
    """Interned ids of pool models that ``want`` names: the exact id, or a family such as
    'A100' that every matching id contains ('nvidia-a100-sxm-80g')."""
    folded = _fold(want)
    out = []
    for key, ident in t.strings.ids.items():
        if key.startswith("model:"):
            have = key.removeprefix("model:")
            if have == want.lower() or (folded and folded in _fold(have)):
                out.append(ident)
    return out


def _software(sw: SoftwareRequest | None, t: PoolTable, n: int) -> tuple[B, B]:
    bad = np.zeros(n, bool)
    runtime_bad = np.zeros(n, bool)
    if sw is None:
        return bad, runtime_bad
    for want, have in ((sw.driver, t.driver), (sw.cuda, t.cuda), (sw.cann, t.cann)):
        if want is not None:
            bad |= have < version_number(want)
    if sw.container_runtime:
        runtime_bad = ~t.runtime_mask(sw.container_runtime.lower())
    return bad, runtime_bad


def _within(t: PoolTable, prefixes: list[str]) -> B:
    """Pools whose region code starts with any of ``prefixes``."""
    out = np.zeros(len(t), bool)
    for prefix in prefixes:
        out |= np.char.startswith(t.region_codes, prefix)
    return out


def _region(spec: TaskSpec, t: PoolTable) -> B:
    place = spec.placement
    bad = _within(t, place.regions_deny)
    if place.regions:
        bad |= ~_within(t, place.regions)
    return bad


def rule_masks(shape: Shape, t: PoolTable) -> dict[str, B]:
    """For each rule in :data:`RULES` that the shape uses, the pools that fail it."""
    n = len(t)
    spec = shape.spec
    res = spec.resources
    place = spec.placement
    out: dict[str, B] = {}
    if place.pool is not None:
        pinned = np.ones(n, bool)
        idx = t.index.get(place.pool)
        if idx is not None:
            pinned[idx] = False
        out["pinned"] = pinned
    if res.architecture:
        out["architecture"] = t.arch != t.strings.find("arch:" + res.architecture)
    acc = res.accelerator
    if acc is not None:
        bad = t.vendor < 0
        if acc.vendor:
            bad = bad | (t.vendor != t.strings.find("vendor:" + acc.vendor.lower()))
        if acc.model:
            bad = bad | ~np.isin(t.model, models_matching(acc.model, t))
        out["accelerator"] = bad
        if acc.min_memory_gib:
            out["accelerator_memory"] = t.card_mem_mib < acc.min_memory_gib * 1024
        if acc.count > 1:  # one card: the accelerator rule already says it all
            out["gang"] = t.total_cards < acc.count
    need = shape.need
    out["cpu"] = (t.cores_per_machine < need.cpu_cores) | (t.total_cpu < need.cpu_cores)
    out["memory"] = t.mem_per_machine < need.memory_mib
    sw_bad, rt_bad = _software(res.software, t, n)
    if res.software is not None:
        out["software"] = sw_bad
        if res.software.container_runtime:
            out["container_runtime"] = rt_bad
    if place.regions or place.regions_deny:
        out["region"] = _region(spec, t)
    cap = spec.max_price()
    if cap is not None:
        price = t.price_card if acc is not None else t.price_core
        out["price"] = price > float(cap)
    if place.labels:
        bad = np.zeros(n, bool)
        for key, value in place.labels.items():
            bad |= ~t.label_mask(key, value)
        out["labels"] = bad
    needs = frozenset(c.value for c in spec.needs())
    if needs and any(t.unsupported):
        out["capability"] = t.lacking(needs)
    return out


def eligible_mask(masks: dict[str, B], n: int) -> B:
    """Pools that pass every rule."""
    ok = np.ones(n, bool)
    for bad in masks.values():
        ok &= ~bad
    return ok


def hard_reject(task: TaskSpec, pool: PoolView) -> str | None:
    """The first rule (in :data:`RULES` order) ``pool`` fails for ``task`` as written, or None."""
    from computenet.sched.pooltable import build_table
    from computenet.sched.types import Context

    masks = rule_masks(shape_of(task, -1), build_table([pool], Context()))
    return next((r for r in RULES if r in masks and bool(masks[r][0])), None)
