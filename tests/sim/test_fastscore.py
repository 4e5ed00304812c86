"""The national engine's matrix scores equal the core's policies.score on every policy."""

from __future__ import annotations

import numpy as np
import pytest

from computenet.model.task import Policy
from computenet.sched.estimates import Estimates
from computenet.sched.policies import score
from computenet.sim.fastscore import COLUMNS, coefficients, scores


@pytest.mark.parametrize("policy", list(Policy))
def test_matrix_scores_equal_the_core(policy: Policy) -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 300):
        cols = rng.uniform(0.01, 5.0, size=(len(COLUMNS), n))
        cols[3] = rng.integers(0, 2, size=n)  # remote is 0 or 1
        cards, work_s, input_gb, egress = 2.0, 1800.0, 3.5, 0.5
        est = coefficients(cards, work_s, input_gb, egress) @ cols
        run = work_s * cols[2]
        hours = run / 3600
        core = Estimates(
            idx=np.arange(n),
            transfer_s=cols[0] + input_gb * cols[1],
            egress_gb=input_gb * cols[3],
            wait_s=np.zeros(n),
            run_s=run,
            cost=cols[4] / cols[2] * cards * hours + input_gb * cols[3] * egress,
            carbon_g=cols[5] / cols[2] * cards * hours,
            rtt_ms=cols[6],
            reliability=np.ones(n),
            speed_known=np.ones(n, bool),
        )
        assert scores(policy, est) == pytest.approx(score(policy, core), abs=1e-9)


def test_equal_candidates_score_zero() -> None:
    est = np.ones((4, 3))
    assert list(scores(Policy.BALANCED, est)) == [0.0, 0.0, 0.0]
