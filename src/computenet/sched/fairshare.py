"""Weighted fair share between tenants, priorities and quotas: the order tasks are tried in.

Higher priority goes first. Within one priority, the next task comes from the tenant whose
share, (usage + granted this round) / weight, is smallest, so grants converge to the weights.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from itertools import groupby

from computenet.sched.types import TaskView, TenantShare

CORES_PER_CARD = 8  # CPU work is counted as cores / 8 card-equivalents


def units(cards: int, cpu_cores: int) -> float:
    """What a task counts against its tenant's share: cards, or cores / CORES_PER_CARD."""
    return float(cards) if cards else cpu_cores / CORES_PER_CARD


class FairShare:
    """Tracks each tenant's share during a round."""

    def __init__(self, tenants: dict[str, TenantShare]) -> None:
        self._tenants = tenants
        self.held: dict[str, float] = {k: v.usage for k, v in tenants.items()}

    def share(self, tenant: str) -> float:
        """The tenant's current weighted share."""
        info = self._tenants.get(tenant, TenantShare())
        return self.held.get(tenant, 0.0) / max(info.weight, 1e-9)

    def within_quota(self, tenant: str, amount: float) -> bool:
        """True when granting ``amount`` more keeps the tenant within its quota."""
        quota = self._tenants.get(tenant, TenantShare()).quota
        return quota is None or self.held.get(tenant, 0.0) + amount <= quota + 1e-9

    def grant(self, tenant: str, amount: float) -> None:
        """Record that the tenant was given ``amount``."""
        self.held[tenant] = self.held.get(tenant, 0.0) + amount

    def order(self, tasks: Iterable[TaskView]) -> Iterator[TaskView]:
        """Tasks in the order they should be tried; reads shares as grants happen."""
        ranked = sorted(tasks, key=lambda tv: (-tv.priority, tv.seq))
        for _, band in groupby(ranked, key=lambda tv: tv.priority):
            queues: dict[str, list[TaskView]] = {}
            for tv in band:
                queues.setdefault(tv.tenant, []).append(tv)
            if len(queues) == 1:
                yield from next(iter(queues.values()))
                continue
            pos = dict.fromkeys(queues, 0)
            heap = [(self.share(k), q[0].seq, k) for k, q in queues.items()]
            heapq.heapify(heap)
            while heap:
                _, _, tenant = heapq.heappop(heap)
                queue = queues[tenant]
                yield queue[pos[tenant]]
                pos[tenant] += 1
                if pos[tenant] < len(queue):
                    heapq.heappush(heap, (self.share(tenant), queue[pos[tenant]].seq, tenant))
