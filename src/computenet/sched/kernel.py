"""The round's sequential part as one compiled loop over arrays (Numba).

A round has a part that is the same for every task of a shape (constraints, estimates,
static scores: NumPy, once per shape, in :mod:`computenet.sched.fastround`) and a part that
is inherently sequential: tasks are tried one at a time in fair-share order, and each
placement consumes capacity that the next task sees and adds to its tenant's share, which
decides who goes next. This module is that second part, written over plain arrays so that
Numba compiles it: no Python object is touched per task.

It does exactly what :mod:`computenet.sched.batch` does for a round without reservations or
preemptible running work (the reference, which runs those rounds and small ones): the same order
(priority, then the tenant with the smallest weighted share, then submission order), the same
lazy per-option heaps of ``(score + load weight x utilization, pool version, pool)`` and
the same heap algorithm as Python's ``heapq``, so ties and even unusual values (NaN scores)
resolve the same way. Capacity only shrinks within a round, so an entry whose pool no longer
fits is dropped for good, and one whose pool changed is re-scored when it reaches the top.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from computenet.sched.fastround import AT_QUOTA, NO_OPTIONS, PLACED, VERSION_SHIFT, WAITING

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


Fn = TypeVar("Fn", bound=Callable[..., Any])


def _compiled(fn: Fn) -> Fn:
    """Compile ``fn`` with Numba (cached on disk next to this module), same signature."""
    return cast(Fn, numba.njit(cache=True, nogil=True)(fn))


# A heap entry: a score and an integer that breaks its ties. Option heaps hold
# (score, pool version, candidate) as the reference does, the last two packed into ``k`` (a
# version below 2**31 and a candidate below 2**32 compare as the pair does); the tenant heap
# holds (share, rank of the queue head by submission order, then tenant name). One record per
# entry keeps a heap step to one cache line: the heaps of a national round are megabytes.
ENTRY = np.dtype([("v", np.float64), ("k", np.int64)])
Heap = npt.NDArray[np.void]


@_compiled
def _lt(v1: float, k1: int, v2: float, k2: int) -> bool:
    """``(v1, k1) < (v2, k2)`` as Python compares tuples (the first unequal item decides)."""
    if v1 != v2:
        return v1 < v2
    return k1 < k2


@_compiled
def _sift_down(h: Heap, base: int, start: int, pos: int) -> None:
    """heapq._siftdown on the heap stored from ``base``."""
    v, k = h[base + pos].v, h[base + pos].k
    while pos > start:
        parent = (pos - 1) >> 1
        pv, pk = h[base + parent].v, h[base + parent].k
        if _lt(v, k, pv, pk):
            h[base + pos].v, h[base + pos].k = pv, pk
            pos = parent
            continue
        break
    h[base + pos].v, h[base + pos].k = v, k


@_compiled
def _sift_up(h: Heap, base: int, size: int, pos: int) -> None:
    """heapq._siftup: move the hole at ``pos`` to a leaf, then sift the item back down."""
    start = pos
    v, k = h[base + pos].v, h[base + pos].k
    child = 2 * pos + 1
    while child < size:
        right = child + 1
        if right < size and not _lt(
            h[base + child].v, h[base + child].k, h[base + right].v, h[base + right].k
        ):
            child = right
        h[base + pos].v, h[base + pos].k = h[base + child].v, h[base + child].k
        pos = child
        child = 2 * pos + 1
    h[base + pos].v, h[base + pos].k = v, k
    _sift_down(h, base, start, pos)


@_compiled
def _util(i: int, cards: F64, cpu: F64, total_cards: F64, total_cpu: F64) -> float:
    if total_cards[i] > 0:
        return float(1.0 - cards[i] / total_cards[i])
    return float(1.0 - cpu[i] / max(total_cpu[i], 1.0))


@_compiled
def run_round(
    order: I64,
    band_end: I64,
    task_group: I64,
    task_tenant: I64,
    task_rank: I64,
    by_rank: I64,
    group_first: I64,
    group_last: I64,
    group_lw: F64,
    group_units: F64,
    opt_start: I64,
    opt_end: I64,
    opt_need: I64,
    opt_units: F64,
    cand_pool: I64,
    cand_static: F64,
    cards: F64,
    cpu: F64,
    mem: F64,
    total_cards: F64,
    total_cpu: F64,
    held: F64,
    weight: F64,
    quota: F64,
    has_quota: npt.NDArray[np.bool_],
    n_tenants: int,
    out_task: I64,
    out_status: I64,
    out_cand: I64,
    out_value: F64,
) -> None:
    """Place the tasks of ``order`` (sorted by priority, then seq; bands of equal priority end
    at ``band_end``). Per decision ``k`` (in the order tried) it writes the task, its status,
    the chosen candidate (index into ``cand_*``, -1 if none) and its score. ``cards``, ``cpu``,
    ``mem`` and ``held`` are updated in place."""
    n_pools = len(cards)
    version = np.zeros(n_pools, np.int64)
    # Per option: its lazy heap lives at the option's candidate range.
    heaps = np.empty(len(cand_pool), ENTRY)
    hsize = np.zeros(len(opt_start), np.int64)
    built = np.zeros(len(group_first), np.bool_)
    # Per tenant queue within a band, and the fair-share heap over tenants.
    q_count = np.zeros(n_tenants, np.int64)
    q_start = np.zeros(n_tenants, np.int64)
    q_pos = np.zeros(n_tenants, np.int64)
    queued = np.empty(len(order), np.int64)
    th = np.empty(n_tenants, ENTRY)
    k = 0
    band_start = 0
    for band in range(len(band_end)):
        end = band_end[band]
        # Stable counting sort of the band by tenant: each tenant's queue in seq order.
        q_count[:] = 0
        for r in range(band_start, end):
            q_count[task_tenant[order[r]]] += 1
        acc = band_start
        for u in range(n_tenants):
            q_start[u] = acc
            q_pos[u] = acc
            acc += q_count[u]
        for r in range(band_start, end):
            x = order[r]
            u = task_tenant[x]
            queued[q_pos[u]] = x
            q_pos[u] += 1
        size = 0
        for u in range(n_tenants):
            q_pos[u] = q_start[u]
            if q_count[u]:
                th[size].v = held[u] / max(weight[u], 1e-9)
                th[size].k = task_rank[queued[q_start[u]]]
                size += 1
        for p in range(size // 2 - 1, -1, -1):
            _sift_up(th, 0, size, p)
        while size:
            # heappop
            u = task_tenant[by_rank[th[0].k]]
            size -= 1
            if size:
                th[0].v, th[0].k = th[size].v, th[size].k
                _sift_up(th, 0, size, 0)
            x = queued[q_pos[u]]
            q_pos[u] += 1
            _decide(
                x,
                u,
                k,
                task_group,
                group_first,
                group_last,
                group_lw,
                group_units,
                opt_start,
                opt_end,
                opt_need,
                opt_units,
                cand_pool,
                cand_static,
                cards,
                cpu,
                mem,
                total_cards,
                total_cpu,
                held,
                quota,
                has_quota,
                version,
                heaps,
                hsize,
                built,
                out_task,
                out_status,
                out_cand,
                out_value,
            )
            k += 1
            if q_pos[u] < q_start[u] + q_count[u]:
                # heappush
                th[size].v = held[u] / max(weight[u], 1e-9)
                th[size].k = task_rank[queued[q_pos[u]]]
                size += 1
                _sift_down(th, 0, 0, size - 1)
        band_start = end


@_compiled
def _decide(
    x: int,
    u: int,
    k: int,
    task_group: I64,
    group_first: I64,
    group_last: I64,
    group_lw: F64,
    group_units: F64,
    opt_start: I64,
    opt_end: I64,
    opt_need: I64,
    opt_units: F64,
    cand_pool: I64,
    cand_static: F64,
    cards: F64,
    cpu: F64,
    mem: F64,
    total_cards: F64,
    total_cpu: F64,
    held: F64,
    quota: F64,
    has_quota: npt.NDArray[np.bool_],
    version: I64,
    h: Heap,
    hsize: I64,
    built: npt.NDArray[np.bool_],
    out_task: I64,
    out_status: I64,
    out_cand: I64,
    out_value: F64,
) -> None:
    """One task ``x`` of tenant ``u``: decision number ``k``."""
    out_task[k] = x
    out_cand[k] = -1
    out_value[k] = 0.0
    g = task_group[x]
    lw = group_lw[g]
    if not built[g]:
        # As the reference builds a group on its first task: scores with the load now.
        built[g] = True
        for o in range(group_first[g], group_last[g]):
            base = opt_start[o]
            n = opt_end[o] - base
            for j in range(n):
                i = cand_pool[base + j]
                h[base + j].v = cand_static[base + j] + lw * _util(
                    i, cards, cpu, total_cards, total_cpu
                )
                h[base + j].k = (version[i] << VERSION_SHIFT) | j
            hsize[o] = n
            for p in range(n // 2 - 1, -1, -1):
                _sift_up(h, base, n, p)
    if group_first[g] == group_last[g]:
        out_status[k] = NO_OPTIONS
        return
    if has_quota[u] and not held[u] + group_units[g] <= quota[u] + 1e-9:
        out_status[k] = AT_QUOTA
        return
    best_o = -1
    best_j = -1
    best_v = 0.0
    for o in range(group_first[g], group_last[g]):
        base = opt_start[o]
        need_cards = opt_need[3 * o]
        need_cpu = opt_need[3 * o + 1]
        need_mem = opt_need[3 * o + 2]
        while hsize[o]:
            value, key = h[base].v, h[base].k
            j = key & ((1 << VERSION_SHIFT) - 1)
            i = cand_pool[base + j]
            if cards[i] < need_cards or cpu[i] < need_cpu or mem[i] < need_mem:
                # heappop: capacity only shrinks within a round
                hsize[o] -= 1
                last = base + hsize[o]
                if hsize[o]:
                    h[base].v, h[base].k = h[last].v, h[last].k
                    _sift_up(h, base, hsize[o], 0)
                continue
            if key >> VERSION_SHIFT != version[i]:
                # heapreplace with the pool's current load
                h[base].v = cand_static[base + j] + lw * _util(
                    i, cards, cpu, total_cards, total_cpu
                )
                h[base].k = (version[i] << VERSION_SHIFT) | j
                _sift_up(h, base, hsize[o], 0)
                continue
            if best_o < 0 or value < best_v:
                best_o, best_j, best_v = o, j, value
            break
    if best_o < 0:
        out_status[k] = WAITING
        return
    base = opt_start[best_o]
    i = cand_pool[base + best_j]
    cards[i] -= opt_need[3 * best_o]
    cpu[i] -= opt_need[3 * best_o + 1]
    mem[i] -= opt_need[3 * best_o + 2]
    version[i] += 1
    held[u] += opt_units[best_o]
    out_status[k] = PLACED
    out_cand[k] = base + best_j
    out_value[k] = best_v
