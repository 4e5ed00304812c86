"""Router-observed request latency: fixed-bucket histograms kept in time slots.

Each request the router ends costs one bucket search and four increments (time to first byte
and total, in the current slot and in the all-time counts that ``/metrics`` exposes). The
slots (``SLOT_S`` wide, ``HISTORY_S`` of them kept) give quantiles over the metric window and
a p50/p95 series over time for the console, both read off the buckets, so memory per target
is bounded whatever the request rate.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from computenet.model.service import CatsMetric, LatencyPoint, MetricCategory

# Upper bounds of the buckets in ms (one more bucket, unbounded, past the last).
BOUNDS_MS: tuple[float, ...] = (
    0.5, 1, 2, 3, 5, 8, 12, 20, 35, 50, 75, 100, 150, 250, 400, 600,
    1000, 1500, 2500, 4000, 6000, 10000, 20000, 60000,
)  # fmt: skip
SLOT_S = 5  # width of a time slot
HISTORY_S = 600  # slots older than this are dropped
PHASES = ("ttfb", "total")


def quantile_ms(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0-1) of a bucket histogram, interpolated inside its bucket (as
    Prometheus' ``histogram_quantile``); None when empty. The unbounded bucket answers with
    the last finite bound."""
    n = sum(counts)
    if n == 0:
        return None
    rank = q * n
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            if i >= len(BOUNDS_MS):
                return BOUNDS_MS[-1]
            lo = BOUNDS_MS[i - 1] if i else 0.0
            return lo + (BOUNDS_MS[i] - lo) * (rank - seen) / c
        seen += c
    return BOUNDS_MS[-1]


def merged(parts: Iterable[Sequence[int]]) -> list[int]:
    """Bucket counts added up (several replicas make one site)."""
    out = [0] * (len(BOUNDS_MS) + 1)
    for p in parts:
        for i, c in enumerate(p):
            out[i] += c
    return out


@dataclass
class _Slot:
    start: int
    ttfb: list[int]
    total: list[int]


@dataclass
class Latency:
    """The latency histograms of one target (a replica, or a node requests are forwarded to)."""

    slots: deque[_Slot] = field(default_factory=deque)
    counts: dict[str, list[int]] = field(
        default_factory=lambda: {p: [0] * (len(BOUNDS_MS) + 1) for p in PHASES}
    )
    sum_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    def observe(self, now: float, ttfb_ms: float, total_ms: float) -> None:
        """Count one request (``now`` in the plane's clock seconds)."""
        start = int(now) - int(now) % SLOT_S
        slots = self.slots
        if not slots or slots[-1].start != start:
            n = len(BOUNDS_MS) + 1
            slots.append(_Slot(start, [0] * n, [0] * n))
            while slots[0].start < start - HISTORY_S:
                slots.popleft()
        slot = slots[-1]
        i, j = bisect_left(BOUNDS_MS, ttfb_ms), bisect_left(BOUNDS_MS, total_ms)
        slot.ttfb[i] += 1
        slot.total[j] += 1
        self.counts["ttfb"][i] += 1
        self.counts["total"][j] += 1
        self.sum_ms["ttfb"] += ttfb_ms
        self.sum_ms["total"] += total_ms

    def window(self, now: float, window_s: float, phase: str) -> list[int]:
        """Bucket counts of ``phase`` over the slots that overlap the last ``window_s``."""
        since = now - window_s - SLOT_S
        return merged(getattr(s, phase) for s in self.slots if s.start > since)

    def series(self, now: float, phase: str) -> list[tuple[int, list[int]]]:
        """(slot start, bucket counts) of ``phase`` for each slot still kept."""
        since = now - HISTORY_S
        return [(s.start, getattr(s, phase)) for s in self.slots if s.start >= since]


def latency_metrics(
    parts: Sequence[Latency], now: float, window_s: float, source: str
) -> list[CatsMetric]:
    """Raw CATS metrics of the merged histograms: time to first byte and total, p50, p95 and
    p99 over the window (None where no request ended in it)."""
    out = []
    for phase in PHASES:
        counts = merged(p.window(now, window_s, phase) for p in parts)
        for q in (50, 95, 99):
            value = quantile_ms(counts, q / 100)
            out.append(
                CatsMetric(
                    name=f"latency_{phase}_ms",
                    category=MetricCategory.NETWORK,
                    value=round(value, 3) if value is not None else None,
                    unit="ms",
                    source=source,
                    statistic=f"p{q}",
                    window_s=window_s,
                )
            )
    return out


def latency_points(parts: Sequence[Latency], now: float, wall_now: float) -> list[LatencyPoint]:
    """p50 and p95 (total latency) of each time slot of the merged histograms, oldest first;
    ``at`` is the slot's start in Unix seconds."""
    slots: dict[int, list[list[int]]] = {}
    for p in parts:
        for start, counts in p.series(now, "total"):
            slots.setdefault(start, []).append(counts)
    out = []
    for start in sorted(slots):
        counts = merged(slots[start])
        p50, p95 = quantile_ms(counts, 0.5), quantile_ms(counts, 0.95)
        assert p50 is not None and p95 is not None  # a slot exists only once a request ended
        out.append(
            LatencyPoint(
                at=round(wall_now - (now - start), 3),
                requests=sum(counts),
                p50_ms=round(p50, 3),
                p95_ms=round(p95, 3),
            )
        )
    return out
