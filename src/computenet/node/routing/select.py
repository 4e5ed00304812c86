"""The two routing tiers, as pure functions: score sites (CATS levels 1 and 2), then pick a
replica inside the chosen site by the power of two choices on in-flight requests."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from computenet.model.service import MetricCategory
from computenet.node.regions import PROVINCES
from computenet.sched.network import great_circle_km, modelled_link

RTT_SCALE_MS = 100.0  # a site this far away (round trip) scores 0 for the network
LOAD_HALF = 4.0  # in-flight requests per healthy replica at which the compute score halves


@dataclass(frozen=True)
class Site:
    """A candidate site: this node's own gateways (``local``) or another node."""

    code: str
    region: str | None
    local: bool
    healthy_replicas: int
    in_flight: int
    price_per_card_hour: float
    rtt_ms: float
    down: bool = False  # failed a forward lately: tried only after every other site


def region_rtt_ms(a: str | None, b: str | None, measured: dict[tuple[str, str], float]) -> float:
    """Round trip between two regions: measured when known, else the scheduler's model
    (distance between province capitals); unknown regions count as far."""
    if a is None or b is None:
        return RTT_SCALE_MS
    for pair in ((a, b), (b, a)):
        if pair in measured:
            return measured[pair]
    pa, pb = PROVINCES.get(a[:2]), PROVINCES.get(b[:2])
    if pa is None or pb is None:
        return RTT_SCALE_MS
    km = great_circle_km(pa[1], pa[2], pb[1], pb[2])
    return modelled_link(km, a[:2] == b[:2]).rtt_ms


def category_scores(site: Site, cheapest: float) -> dict[MetricCategory, float]:
    """Level-1 scores, 0 (worst) to 10 (best): network from the round trip, compute from the
    in-flight load per healthy replica, cost against the cheapest candidate."""
    network = 10.0 * max(0.0, 1.0 - site.rtt_ms / RTT_SCALE_MS)
    if site.healthy_replicas <= 0:
        compute = 0.0
    else:
        per_replica = site.in_flight / site.healthy_replicas
        compute = 10.0 * LOAD_HALF / (LOAD_HALF + per_replica)
    cost = 10.0 if site.price_per_card_hour <= 0 else 10.0 * cheapest / site.price_per_card_hour
    return {
        MetricCategory.NETWORK: round(network, 3),
        MetricCategory.COMPUTE: round(compute, 3),
        MetricCategory.COST: round(min(10.0, cost), 3),
    }


def overall(scores: dict[MetricCategory, float], weights: dict[MetricCategory, float]) -> float:
    """The level-2 score: the weighted mean of the category scores, 0 to 10."""
    total = sum(weights.values()) or 1.0
    return round(sum(scores[c] * w for c, w in weights.items()) / total, 3)


def rank_sites(
    sites: Sequence[Site], weights: dict[MetricCategory, float]
) -> list[tuple[Site, dict[MetricCategory, float], float]]:
    """Sites best first, each with its category scores and overall score. A site with no
    healthy replica, or one that failed a forward lately, comes last whatever its scores."""
    priced = [s.price_per_card_hour for s in sites if s.price_per_card_hour > 0]
    cheapest = min(priced, default=0.0)
    scored = []
    for s in sites:
        cats = category_scores(s, cheapest)
        scored.append((s, cats, overall(cats, weights)))
    # Ties go to this node: no extra hop.
    scored.sort(
        key=lambda x: (x[0].healthy_replicas > 0 and not x[0].down, x[2], x[0].local),
        reverse=True,
    )
    return scored


def two_choices(
    candidates: Sequence[str], in_flight: Callable[[str], int], rng: random.Random
) -> str:
    """Power of two choices: of two replicas drawn at random, the one with fewer requests in
    flight (one candidate: itself)."""
    if len(candidates) == 1:
        return candidates[0]
    a, b = rng.sample(list(candidates), 2)
    return a if in_flight(a) <= in_flight(b) else b
