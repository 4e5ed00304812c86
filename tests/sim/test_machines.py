"""Machines inside pools: gangs stay on one machine unless allowed to span; shared cards never
carry more than one whole card."""

from __future__ import annotations

import random

import numpy as np
import pytest

from computenet.sim.machines import MILLI, Allocation, Machines


def pools(machines: list[int], cards: list[int]) -> Machines:
    return Machines(np.array(machines, np.int64), np.array(cards, np.int64))


def test_gang_does_not_fit_across_machines_unless_allowed() -> None:
    m = pools([2], [8])  # two machines of 8 cards
    first = m.take(0, 6 * MILLI)
    second = m.take(0, 6 * MILLI)
    assert len(first.machines) == len(second.machines) == 1
    assert first.machines[0][0] != second.machines[0][0]
    # 4 cards are free in all, 2 per machine: a 4-card gang does not fit ...
    assert m.free[0] == 4 and m.gang[0] == 2
    assert not m.fits(0, 4 * MILLI)
    with pytest.raises(ValueError, match="cannot take"):
        m.take(0, 4 * MILLI)
    # ... unless it may span machines.
    spread = m.take(0, 4 * MILLI, span=True)
    assert sorted(k for _, k in spread.machines) == [2, 2]
    assert m.free[0] == 0


def test_best_fit_keeps_whole_machines_for_large_gangs() -> None:
    m = pools([2], [8])
    m.take(0, 5 * MILLI)
    m.take(0, 2 * MILLI)  # goes to the machine with 3 free, not the empty one
    assert m.gang[0] == 8


def test_fractions_share_one_card_up_to_one_whole() -> None:
    m = pools([1], [2])
    a = m.take(0, 600)
    b = m.take(0, 400)  # fits on a's card exactly
    assert a.shared_card == b.shared_card
    c = m.take(0, 300)  # needs a new card
    assert c.shared_card != a.shared_card
    assert sorted(m.card_loads(0)) == [300, 1000]
    assert m.free[0] == 0 and not m.fits(0, MILLI)
    assert m.fits(0, 700) and not m.fits(0, 701)
    for alloc in (a, b, c):
        m.release(alloc)
    assert m.free[0] == 2 and m.card_loads(0) == []


def test_random_workload_keeps_every_invariant() -> None:
    # A bounded random walk of takes and releases over mixed pools.
    rng = random.Random(7)
    m = pools([1, 3, 2], [8, 4, 16])
    held: list[tuple[Allocation, int, bool]] = []
    for _ in range(3000):
        if held and rng.random() < 0.45:
            alloc, _, _ = held.pop(rng.randrange(len(held)))
            m.release(alloc)
        else:
            pool = rng.randrange(3)
            share = rng.choice([100, 250, 500, 900, MILLI, 2 * MILLI, 4 * MILLI, 8 * MILLI])
            span = rng.random() < 0.2
            if m.fits(pool, share, span):
                held.append((m.take(pool, share, span), share, span))
        for p in range(3):
            assert all(0 < load <= MILLI for load in m.card_loads(p))
            lo, hi = int(m.first[p]), int(m.first[p + 1])
            now = m.free_cards[lo:hi]
            assert (now >= 0).all() and (now <= m.cards_per_machine[p]).all()
            assert m.gang[p] == now.max() and m.free[p] == now.sum()
            expected = sum(s for a, s, _ in held if a.pool == p)
            assert m.used_milli(p) == expected
        for alloc, share, span in held:
            if share >= MILLI and not span:
                assert len(alloc.machines) == 1  # a gang never spans unless allowed
    for alloc, _, _ in held:
        m.release(alloc)
    assert (m.free == m.total).all()
