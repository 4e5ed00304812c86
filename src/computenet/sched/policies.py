"""Policies: one score per candidate, lower is better (formulas in docs/scheduling.md)."""

from __future__ import annotations

import numpy as np

from computenet.model.task import Policy
from computenet.sched.estimates import Estimates
from computenet.sched.pooltable import F64

TIE = 1e-6  # weight of the secondary objective that breaks ties
BALANCED_WEIGHTS = (0.5, 0.3, 0.2)  # expected finish, cost, carbon
LOAD_WEIGHT = {Policy.BALANCED: 0.1}  # how strongly a pool's utilization pushes work elsewhere
LOAD_TIE = 1e-9


def _norm(x: F64) -> F64:
    """Scale to [0, 1] over the candidates (all 0 when they are equal)."""
    if len(x) == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def score(policy: Policy, e: Estimates) -> F64:
    """The policy's score for each candidate in ``e``."""
    finish = e.expected_finish_s
    if policy is Policy.CHEAPEST:
        return _norm(e.cost) + TIE * _norm(finish)
    if policy is Policy.FASTEST:
        return _norm(finish) + TIE * _norm(e.cost)
    if policy is Policy.GREENEST:
        return _norm(e.carbon_g) + TIE * _norm(e.cost)
    if policy is Policy.NEAREST:
        return _norm(e.rtt_ms) + TIE * _norm(finish)
    wf, wc, wg = BALANCED_WEIGHTS
    return wf * _norm(finish) + wc * _norm(e.cost) + wg * _norm(e.carbon_g)


def load_weight(policy: Policy) -> float:
    """Weight of the utilization term added while a round fills pools."""
    return LOAD_WEIGHT.get(policy, LOAD_TIE)
