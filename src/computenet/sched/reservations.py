"""Advance reservations inside one scheduling round (pure).

A reservation sets cards of one pool aside for a tenant over a window. The round honours
it two ways:

* **cover**: while the window is under way, a task of the reserving tenant that fits in
  the reserved cards still free, and whose time limit ends inside the window, runs on them;
* **hold**: for any other task, the reserved cards still free are not there whenever the
  task could overlap the window (from now to now + its time limit; a task without a time
  limit overlaps every window to come), so nobody's work is sitting on the cards when the
  window opens.

What a pool offers as open capacity thus depends on the task's shape (cards, time limit) and
not on its tenant, and it only shrinks as a round places work (taking reserved cards lowers
the pool's free cards and the reservation's alike), so the round's lazy heaps, one per
shape, stay valid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from computenet.sched.types import Reservation


@dataclass
class Hold:
    """One reservation's state during a round."""

    reservation_id: str
    tenant: str
    free_cards: int
    start_in_s: float
    end_in_s: float

    def overlaps(self, limit_s: float) -> bool:
        """Whether work starting now and running up to ``limit_s`` meets the window."""
        return self.start_in_s < limit_s and self.end_in_s > 0

    def covers(self, tenant: str, limit_s: float, cards: int) -> bool:
        """Whether the window is under way and the task fits in it, cards and time."""
        return (
            tenant == self.tenant
            and self.start_in_s <= 0 < self.end_in_s
            and limit_s <= self.end_in_s
            and 0 < cards <= self.free_cards
        )


def limit_of(time_limit_s: int | None) -> float:
    """How long a task may run: its time limit, or without one, for ever."""
    return math.inf if time_limit_s is None else float(time_limit_s)


class Reserved:
    """Reservations by pool index for one round."""

    def __init__(self, reservations: Sequence[Reservation], index: Mapping[str, int]) -> None:
        self.by_pool: dict[int, list[Hold]] = {}
        # Windows under way, by tenant: the only ones that can take a task in this round.
        self.under_way: dict[str, list[tuple[int, Hold]]] = {}
        for r in reservations:
            i = index.get(r.pool)
            if i is None or r.end_in_s <= 0 or r.free_cards <= 0:
                continue
            hold = Hold(r.reservation_id, r.tenant, r.free_cards, r.start_in_s, r.end_in_s)
            self.by_pool.setdefault(i, []).append(hold)
            if r.start_in_s <= 0:
                self.under_way.setdefault(r.tenant, []).append((i, hold))

    def __bool__(self) -> bool:
        return bool(self.by_pool)

    def held(self, i: int, limit_s: float, cards: int) -> int:
        """Cards of pool ``i`` that a task asking for ``cards`` may not take as open capacity:
        the free part of every reservation it could overlap (its own tenant's too: a task
        runs wholly on a reservation or wholly on open capacity)."""
        holds = self.by_pool.get(i)
        if not holds or cards <= 0:
            return 0
        return sum(h.free_cards for h in holds if h.overlaps(limit_s))

    def covering_pools(self, tenant: str, limit_s: float, cards: int) -> list[tuple[int, Hold]]:
        """Every pool where one of the tenant's reservations can take this task now."""
        return [
            (i, h) for i, h in self.under_way.get(tenant, ()) if h.covers(tenant, limit_s, cards)
        ]

    def blocking(self, pools: Sequence[int], limit_s: float) -> tuple[int, int]:
        """(cards, pools) among ``pools`` that reservations keep from a task: for its reason."""
        cards = n = 0
        for i in pools:
            held = self.held(i, limit_s, 1)
            if held:
                cards += held
                n += 1
        return cards, n
