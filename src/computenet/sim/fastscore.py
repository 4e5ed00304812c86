"""The core's policy scores in matrix form, for the national-scale engine's hot path.

``computenet.sched.policies.score`` ranks candidates by a weighted sum of estimates
(expected finish, cost, carbon, round trip), each scaled to [0, 1] over the candidates. For
one task all four estimates are linear in a few per-pool columns, so the engine gathers the
columns of the candidates once and gets every estimate from one small matrix product, then
scales and weighs them exactly as ``policies.score`` does (tests/sim/test_fastscore.py checks
the two agree on every policy).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from computenet.model.task import Policy
from computenet.sched.policies import BALANCED_WEIGHTS, TIE

F64 = npt.NDArray[np.float64]

# Rows of the per-pool column block (per origin province), in this order.
COLUMNS = ("rtt_s", "s_per_gb", "inv_ratio", "remote", "price_x_inv", "carbon_x_inv", "rtt_ms")
SCALE_EPS = 1e-12  # as policies._norm: a spread this small counts as no spread

_wf, _wc, _wg = BALANCED_WEIGHTS
# Weights of (finish, cost, carbon, rtt) per core policy, as policies.score applies them.
WEIGHTS: dict[Policy, F64] = {
    Policy.BALANCED: np.array([_wf, _wc, _wg, 0.0]),
    Policy.CHEAPEST: np.array([TIE, 1.0, 0.0, 0.0]),
    Policy.FASTEST: np.array([1.0, TIE, 0.0, 0.0]),
    Policy.GREENEST: np.array([0.0, TIE, 1.0, 0.0]),
    Policy.NEAREST: np.array([TIE, 0.0, 0.0, 1.0]),
}


def coefficients(cards: float, work_s: float, input_gb: float, egress_price: float) -> F64:
    """The 4 x 7 matrix turning a candidate's columns into (finish s, cost, carbon g, rtt ms)
    for one task: ``cards`` cards, ``work_s`` on the reference card, ``input_gb`` to move."""
    card_h = cards * work_s / 3600
    c = np.zeros((4, len(COLUMNS)))
    c[0, 0], c[0, 1], c[0, 2] = 1.0, input_gb, work_s  # transfer + run
    c[1, 3], c[1, 4] = egress_price * input_gb, card_h  # egress + price x card-hours
    c[2, 5] = card_h  # grid g per card-hour x card-hours
    c[3, 6] = 1.0
    return c


def scores(policy: Policy, estimates: F64) -> F64:
    """``policies.score`` over rows (finish, cost, carbon, rtt) of ``estimates`` (4 x n)."""
    lo = estimates.min(axis=1)
    hi = estimates.max(axis=1)
    spread = hi - lo
    flat = spread <= SCALE_EPS * np.maximum(1.0, np.abs(hi))
    spread = np.where(flat, np.inf, spread)
    out: F64 = WEIGHTS[policy] @ ((estimates - lo[:, None]) / spread[:, None])
    return out
