"""Machines inside pools: gang placement on one machine and fractional cards.

A pool is ``machines`` machines of ``cards_per_machine`` cards each. A job asks for a share
of cards in milli-cards (``MILLI`` = one card): a whole number of cards, or a fraction of one
card (``0 < share < MILLI``). Whole cards of a gang job all come from one machine unless the
job may span machines; a fraction goes on a card that other fractions share, never past one
whole card. Integers throughout, so shares add up exactly.

Per pool the module keeps three summaries that placement reads without looking at machines:
``gang`` (most whole free cards on one machine), ``free`` (whole free cards in the pool) and
``frac`` (the largest share one card can still take). Every take and release touches one
pool and updates its summaries from that pool's machines only, so an event costs
O(machines in the pool), never O(pools).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MILLI = 1000  # one whole card, in milli-cards

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Allocation:
    """Where one job's share went: whole cards per machine, or one shared card."""

    pool: int
    machines: tuple[tuple[int, int], ...]  # (global machine index, whole cards taken)
    shared_card: int = -1  # key of the shared card for a fraction, -1 for whole cards
    share: int = 0  # milli-cards taken on the shared card


class Machines:
    """Free cards of every machine of every pool, with per-pool summaries."""

    def __init__(self, machines: I64, cards_per_machine: I64) -> None:
        """``machines[p]`` machines of ``cards_per_machine[p]`` cards in pool ``p``."""
        if len(machines) != len(cards_per_machine):
            raise ValueError("machines and cards_per_machine differ in length")
        if (machines < 1).any() or (cards_per_machine < 1).any():
            raise ValueError("every pool needs at least one machine of at least one card")
        self.first: I64 = np.concatenate(([0], np.cumsum(machines))).astype(np.int64)
        self.cards_per_machine = cards_per_machine.astype(np.int64)
        self.free_cards: I32 = np.repeat(cards_per_machine, machines).astype(np.int32)
        self.gang: I64 = self.cards_per_machine.copy()
        self.free: I64 = (machines * cards_per_machine).astype(np.int64)
        self.total: I64 = self.free.copy()
        self.frac: I64 = np.full(len(machines), MILLI, np.int64)
        # Shared cards per pool: key -> (machine, milli-cards still free on that card).
        self._shared: list[dict[int, list[int]]] = [{} for _ in range(len(machines))]
        self._next_key = 0

    def __len__(self) -> int:
        return len(self.gang)

    def fits(self, pool: int, share: int, span: bool = False) -> bool:
        """True when ``pool`` can take ``share`` milli-cards now."""
        if share < MILLI:
            return bool(self.frac[pool] >= share)
        cards = share // MILLI
        return bool((self.free[pool] if span else self.gang[pool]) >= cards)

    def fits_mask(self, pools: I64, share: int, span: bool = False) -> npt.NDArray[np.bool_]:
        """``fits`` for many pools at once."""
        if share < MILLI:
            return self.frac[pools] >= share
        cards = share // MILLI
        return (self.free[pools] if span else self.gang[pools]) >= cards

    def take(self, pool: int, share: int, span: bool = False) -> Allocation:
        """Take ``share`` on ``pool`` (which must fit): the fullest machine that fits first,
        so whole machines stay free for large gangs (best fit)."""
        if not self.fits(pool, share, span):
            raise ValueError(f"pool {pool} cannot take {share} milli-cards now")
        lo, hi = int(self.first[pool]), int(self.first[pool + 1])
        cards_now = self.free_cards[lo:hi]
        if share < MILLI:
            alloc = self._take_fraction(pool, share, lo, cards_now)
        else:
            alloc = self._take_whole(pool, share // MILLI, span, lo, cards_now)
        self._summarize(pool)
        return alloc

    def _take_whole(self, pool: int, cards: int, span: bool, lo: int, now: I32) -> Allocation:
        free = now.tolist()  # a pool has few machines: plain lists beat NumPy calls here
        best = -1
        for m, k in enumerate(free):
            if k >= cards and (best < 0 or k < free[best]):
                best = m
        if best >= 0:
            self.free_cards[lo + best] -= cards
            return Allocation(pool, ((lo + best, cards),))
        # Spanning: fullest machines first, so the job touches as few machines as it can.
        taken: list[tuple[int, int]] = []
        left = cards
        for m in sorted(range(len(free)), key=lambda m: -free[m]):
            if left == 0:
                break
            k = min(left, free[m])
            if k:
                self.free_cards[lo + m] -= k
                taken.append((lo + m, k))
                left -= k
        return Allocation(pool, tuple(taken))

    def _take_fraction(self, pool: int, share: int, lo: int, now: I32) -> Allocation:
        shared = self._shared[pool]
        best_key, best_left = -1, MILLI + 1
        for key, (_, left) in shared.items():
            if share <= left < best_left:
                best_key, best_left = key, left
        if best_key < 0:
            # Open a new shared card on the fullest machine that has a whole card free.
            free = now.tolist()
            m = lo + min((k, i) for i, k in enumerate(free) if k >= 1)[1]
            self.free_cards[m] -= 1
            best_key = self._next_key
            self._next_key += 1
            shared[best_key] = [m, MILLI]
        entry = shared[best_key]
        entry[1] -= share
        return Allocation(pool, ((entry[0], 0),), best_key, share)

    def release(self, alloc: Allocation) -> None:
        """Give back what ``alloc`` took."""
        pool = alloc.pool
        if alloc.shared_card >= 0:
            entry = self._shared[pool][alloc.shared_card]
            entry[1] += alloc.share
            if entry[1] == MILLI:  # the last fraction left: the card is whole again
                self.free_cards[entry[0]] += 1
                del self._shared[pool][alloc.shared_card]
        else:
            for m, k in alloc.machines:
                self.free_cards[m] += k
        self._summarize(pool)

    def _summarize(self, pool: int) -> None:
        now = self.free_cards[int(self.first[pool]) : int(self.first[pool + 1])].tolist()
        gang = max(now)
        self.gang[pool] = gang
        self.free[pool] = sum(now)
        best = max((left for _, left in self._shared[pool].values()), default=0)
        self.frac[pool] = MILLI if gang > 0 else best

    def card_loads(self, pool: int) -> list[int]:
        """Milli-cards in use on each card of ``pool`` that is shared (for checks and tests)."""
        return [MILLI - left for _, left in self._shared[pool].values()]

    def used_milli(self, pool: int) -> int:
        """Milli-cards in use on ``pool``: whole cards taken plus shares of shared cards."""
        whole = int(self.total[pool] - self.free[pool]) - len(self._shared[pool])
        return whole * MILLI + sum(self.card_loads(pool))
