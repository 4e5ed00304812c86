"""Per-candidate estimates for one task shape, vectorized over pools.

Every figure is an estimate from a stated model (docs/scheduling.md): transfer time from
dataset sizes and replica locations over the region network, run time from the task's hint
scaled by pool speed, cost from price and egress, carbon from energy and the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from computenet.sched.constraints import Shape
from computenet.sched.network import provinces
from computenet.sched.pooltable import F64, I64, B, PoolTable, card_tflops, gpu_family
from computenet.sched.pooltable import workload_throughputs as _throughputs
from computenet.sched.types import Context

DEFAULT_RUNTIME_S = 3600.0
REFERENCE_MODEL = "nvidia-v100-sxm2-16g"  # what a runtime hint means when no hint_model is given
CARD_KW = 0.4  # assumed average draw per accelerator card
CORE_KW = 0.01  # assumed average draw per CPU core
BITS_PER_BYTE = 8


@dataclass(frozen=True)
class Estimates:
    """Column estimates for the pools ``idx`` of a table (same order)."""

    idx: I64
    transfer_s: F64
    egress_gb: F64
    wait_s: F64
    run_s: F64
    cost: F64
    carbon_g: F64
    rtt_ms: F64
    reliability: F64
    speed_known: B  # False: no speed figure, run_s is the task's declared run time

    @property
    def expected_finish_s(self) -> F64:
        """Wait plus transfer plus run time stretched by expected retries (1/reliability)."""
        return self.wait_s + self.transfer_s + self.run_s / self.reliability


def transfer(shape: Shape, t: PoolTable, idx: I64, ctx: Context) -> tuple[F64, F64]:
    """Seconds to bring the task's datasets to each pool, and GB crossing provinces."""
    secs = np.zeros(len(idx))
    egress = np.zeros(len(idx))
    prov = provinces()
    dest = t.province[idx]
    known = dest >= 0
    for name in shape.spec.placement.datasets:
        ds = ctx.datasets.get(name)
        if ds is None or not ds.regions:
            continue
        best = np.full(len(idx), np.inf)
        local = np.zeros(len(idx), bool)
        for code in ds.regions:
            src = prov.of(code)
            if src < 0:
                continue
            rtt = np.where(known, t.rtt[src, np.maximum(dest, 0)], t.rtt.mean())
            bw = np.where(known, t.bandwidth[src, np.maximum(dest, 0)], t.bandwidth.min())
            time = rtt / 1000 + ds.size_bytes * BITS_PER_BYTE / (bw * 1e6)
            best = np.minimum(best, time)
            local |= dest == src
        secs += np.where(np.isfinite(best), best, 0.0)
        egress += np.where(local, 0.0, ds.size_bytes / 1e9)
    return secs, egress


def _speed_ratio(shape: Shape, t: PoolTable, idx: I64) -> tuple[F64, B]:
    """How many times faster each pool runs the task than the hint's reference card, and
    whether that is known.

    A ratio needs a figure on both sides (catalog or measured FP16 of the pool and of the
    hint's card) or the workload's measured speeds on both families. Where either is missing
    the speed is unknown and the ratio is 1: the task's declared run time is used as it is,
    rather than pretending the card is as fast as the reference.
    """
    place = shape.spec.placement
    if shape.cards == 0:
        return np.ones(len(idx)), np.ones(len(idx), bool)
    ref_model = place.hint_model or REFERENCE_MODEL
    ref_tflops = card_tflops(ref_model)
    pool_tflops = t.tflops[idx]
    known = (pool_tflops > 0) & (ref_tflops > 0)
    ratio = np.where(known, pool_tflops / (ref_tflops or 1.0), 1.0)
    table = _throughputs().get(place.workload or "")
    ref_family = gpu_family(ref_model)
    if table is not None and ref_family is not None:
        fams = [t.family[i] for i in idx]
        measured = np.array([table[f] / table[ref_family] if f else np.nan for f in fams])
        has = ~np.isnan(measured)
        ratio = np.where(has, measured, ratio)
        known = known | has
    return np.asarray(ratio, dtype=np.float64), known


def estimate(shape: Shape, t: PoolTable, idx: I64, ctx: Context, fits_now: F64 | None) -> Estimates:
    """Estimates for the pools ``idx``; ``fits_now`` (bool per idx) zeroes their queue wait."""
    spec = shape.spec
    hint = spec.placement.runtime_hint_s or spec.resources.time_limit_s or DEFAULT_RUNTIME_S
    ratio, speed_known = _speed_ratio(shape, t, idx)
    run_s = float(hint) / ratio
    transfer_s, egress_gb = transfer(shape, t, idx, ctx)
    wait_s = t.wait_s[idx].copy()
    if fits_now is not None:
        wait_s[fits_now.astype(bool)] = 0.0
    hours = run_s / 3600
    if shape.cards:
        units = float(shape.cards)
        price = t.price_card[idx]
        power_kw = CARD_KW * units
    else:
        units = float(shape.need.cpu_cores)
        price = t.price_core[idx]
        power_kw = CORE_KW * units
    cost = price * units * hours + egress_gb * float(ctx.egress_price_per_gb)
    carbon = power_kw * hours * t.pue[idx] * t.carbon[idx]
    origin = provinces().of(spec.placement.origin_region or ctx.origin_region)
    dest = t.province[idx]
    if origin >= 0:
        rtt = np.where(dest >= 0, t.rtt[origin, np.maximum(dest, 0)], t.rtt.max())
    else:
        rtt = np.zeros(len(idx))
    return Estimates(
        idx=idx,
        transfer_s=transfer_s,
        egress_gb=egress_gb,
        wait_s=wait_s,
        run_s=run_s,
        cost=cost,
        carbon_g=carbon,
        rtt_ms=rtt,
        reliability=t.reliability[idx],
        speed_known=speed_known,
    )
