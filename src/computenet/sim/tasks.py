"""Tasks for the national-scale engine, as NumPy columns (no object per task).

A task asks for a share of cards in milli-cards (``machines.MILLI`` = one card): whole cards
on one machine, or a fraction of one card. Its ``work_s`` is the run time it declares on one
reference card (``computenet.sched.estimates.REFERENCE_MODEL``, a V100); a pool's card runs it
``catalog FP16 of the card / FP16 of the reference`` times faster, and a card without a
catalog figure runs it in the declared time (speed unknown, reported as such).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from computenet.errors import InvalidInput
from computenet.sched.estimates import REFERENCE_MODEL
from computenet.sched.pooltable import card_tflops
from computenet.sim.machines import MILLI
from computenet.sim.national import Federation

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# (share in milli-cards, weight): a tenth of the tasks want part of a card, most want one.
SHARE_MIX: tuple[tuple[int, float], ...] = (
    (250, 0.05),
    (500, 0.05),
    (MILLI, 0.5),
    (2 * MILLI, 0.15),
    (4 * MILLI, 0.15),
    (8 * MILLI, 0.10),
)
MEDIAN_WORK_S = 1800.0  # declared run time on the reference card, log-normal
WORK_SIGMA = 1.0
MEAN_INPUT_GB = 5.0
DEFAULT_LOAD = 1.0  # offered work / capacity (docs/simulator.md)


@dataclass(frozen=True)
class Tasks:
    """Columns of a trace, in arrival order."""

    arrival_s: F64
    share: I64  # milli-cards
    work_s: F64  # declared run time on one reference card
    node: I64  # the industry node it is submitted at
    origin: I64  # province index of that node (where its user and data are)
    input_gb: F64
    tenant: I64

    def __len__(self) -> int:
        return len(self.arrival_s)


def speed_ratio(fed: Federation) -> tuple[F64, npt.NDArray[np.bool_]]:
    """How many times faster than the reference card each pool runs a task, and whether that
    is known (a card without a catalog figure runs at the declared time: ratio 1, unknown)."""
    ref = card_tflops(REFERENCE_MODEL)
    known = fed.tflops > 0
    return np.where(known, fed.tflops / ref, 1.0), known


def synthetic_tasks(
    n: int, fed: Federation, load: float = DEFAULT_LOAD, seed: int = 0, tenants: int = 16
) -> Tasks:
    """A seeded trace of ``n`` tasks whose offered work is ``load`` x the federation's capacity.

    Capacity is counted in reference cards: a card ``ratio`` times as fast as the reference
    counts ``ratio`` times. Arrivals are Poisson at the rate whose expected work (reference
    card-seconds per second) is ``load`` x that capacity, so at ``load`` 1 every card would be
    busy if every task ran on a card as fast as the average. Tasks are submitted at industry
    nodes chosen uniformly.
    """
    if not 0 < n <= 10_000_000:
        raise InvalidInput(f"a synthetic trace needs 1 to 10,000,000 tasks, got {n}")
    if not 0 < load <= 10:
        raise InvalidInput(f"load must be in (0, 10], got {load}")
    rng = np.random.default_rng(seed)
    shares = np.array([s for s, _ in SHARE_MIX], np.int64)
    weights = np.array([w for _, w in SHARE_MIX])
    share = rng.choice(shares, size=n, p=weights / weights.sum())
    work = rng.lognormal(np.log(MEDIAN_WORK_S), WORK_SIGMA, size=n)
    ratio, _ = speed_ratio(fed)
    capacity = float((fed.cards * ratio).sum())  # reference cards
    card_s = float((share / MILLI).mean() * work.mean())  # reference card-seconds per task
    rate = load * capacity / card_s  # tasks per second
    arrival = np.cumsum(rng.exponential(1 / rate, size=n))
    industry = np.array([i for i, nd in enumerate(fed.nodes) if nd.kind == "industry"])
    if not len(industry):
        industry = np.array([i for i, nd in enumerate(fed.nodes) if nd.own[1] > nd.own[0]])
    node = rng.choice(industry, size=n)
    origin = np.array([fed.nodes[i].province for i in range(len(fed.nodes))], np.int64)[node]
    return Tasks(
        arrival_s=arrival,
        share=share,
        work_s=work,
        node=node.astype(np.int64),
        origin=origin,
        input_gb=rng.exponential(MEAN_INPUT_GB, size=n),
        tenant=rng.integers(0, tenants, size=n),
    )
