"""The national-scale engine: a federation of nodes, event-driven, pool tables updated in place.

Model (docs/simulator.md, "National scale"):

- A task is submitted at an industry node. The node sees its own pools exactly and places
  on the best of them with room now (the policy's score over those pools).
- When none has room it looks at the federation index: every other pool's capacity as of
  the last index refresh, which is ``index_delay_s`` old at most (sync delay x the longest
  path up and down the tree). It picks the best pool with room there and forwards the task
  to the owner, which takes it after the link's one-way latency if the pool still fits;
  otherwise (the index was stale) the task waits.
- A task that finds no room waits in a queue per share class (fraction, 1, 2, 4, 8... cards)
  in arrival order. At each index refresh, the pools whose capacity changed since the last
  one are offered to the waiting tasks, oldest first, each task taking the best of them
  for it under the policy.

Every event touches one pool (a start or an end) or the pools changed since the last refresh;
scores are computed over the candidates of one decision (a node's own pools, or the pools
with room), never by rebuilding a table of all pools.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from computenet.errors import InvalidInput
from computenet.model.task import Policy
from computenet.sched.estimates import BITS_PER_BYTE, CARD_KW
from computenet.sched.network import network_matrices
from computenet.sched.policies import load_weight
from computenet.sim.fastscore import coefficients, scores
from computenet.sim.machines import MILLI, Machines
from computenet.sim.national import Federation
from computenet.sim.tasks import Tasks, speed_ratio

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

CORE = tuple(p.value for p in Policy)
BASELINES = ("cheapest-first", "least-loaded", "first-fit", "random")
POLICIES = (*CORE, *BASELINES)
EGRESS_PRICE_PER_GB = 0.5  # the core's default (Context.egress_price_per_gb)
INDEX_SCAN_LIMIT = 4096  # candidates from the index scored per decision (best by static score)


@dataclass(frozen=True)
class ScaleResult:
    """One policy's run over a trace on a federation."""

    policy: str
    start_s: F64  # nan: never started
    end_s: F64
    pool: I64  # -1: never started
    forwarded: B  # placed on a pool another node owns
    stale_misses: int  # forwards refused because the index was stale
    waited: int  # tasks that waited in a queue
    staleness_s: F64  # age of the index at each decision that used it
    index_delay_s: float
    events: int


class _Index:
    """Capacity summaries as the federation index shows them: refreshed every
    ``delay_s`` for the pools that changed since the last refresh."""

    def __init__(self, m: Machines, delay_s: float, shares: list[int]) -> None:
        self.m = m
        self.shares = shares
        self.delay_s = delay_s
        self.gang = m.gang.copy()
        self.free = m.free.copy()
        self.frac = m.frac.copy()
        self.dirty: set[int] = set()
        self.refreshed_s = 0.0
        self.room = {s: self._fits(slice(None), s) for s in shares}

    def _fits(self, idx: I64 | slice, share: int) -> B:
        if share < MILLI:
            return self.frac[idx] >= share
        return self.gang[idx] >= share // MILLI

    def refresh(self, now_s: float) -> list[int]:
        """Copy the changed pools' summaries; return them (the pools worth offering)."""
        changed = sorted(self.dirty)
        self.dirty.clear()
        if changed:
            idx = np.array(changed, np.int64)
            self.gang[idx] = self.m.gang[idx]
            self.free[idx] = self.m.free[idx]
            self.frac[idx] = self.m.frac[idx]
            for share, room in self.room.items():
                room[idx] = self._fits(idx, share)
        self.refreshed_s = now_s
        return changed


def index_delay(fed: Federation) -> float:
    """How old the index can be: the sync delay for each hop up to the root and down again."""
    depth = [0] * len(fed.nodes)
    for i, n in enumerate(fed.nodes):
        d, p = 0, n.parent
        while p >= 0:
            d, p = d + 1, fed.nodes[p].parent
        depth[i] = d
    return fed.sync_delay_s * max(1, 2 * max(depth))


class ScaleEngine:
    """Runs one policy over a trace on a federation (create one per run)."""

    def __init__(self, fed: Federation, tasks: Tasks, policy: str, seed: int = 0) -> None:
        if policy not in POLICIES:
            raise InvalidInput(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        self.fed = fed
        self.tasks = tasks
        self.policy = policy
        self.m = Machines(fed.machines, fed.cards_per_machine)
        self.index = _Index(self.m, index_delay(fed), sorted(set(tasks.share.tolist())))
        self.ratio, self.speed_known = speed_ratio(fed)
        self.inv_ratio = 1.0 / self.ratio
        self.rtt, bw = network_matrices()
        self.bits_per_s = bw * 1e6
        self.rng = np.random.default_rng(seed)
        self.lw = load_weight(Policy(policy)) if policy in CORE else 0.0
        self.total = fed.cards.astype(np.float64)
        self.all_pools = np.arange(len(fed), dtype=np.int64)
        self.max_gang = int(fed.cards_per_machine.max())
        self.cols: dict[int, F64] = {}
        self._columns()
        self.core_policy = Policy(policy) if policy in CORE else Policy.BALANCED
        self.own = [np.arange(*n.own, dtype=np.int64) for n in fed.nodes]
        self.shortlist = self._shortlists()
        n = len(tasks)
        self.start = np.full(n, np.nan)
        self.end = np.full(n, np.nan)
        self.pool = np.full(n, -1, np.int64)
        self.forwarded = np.zeros(n, bool)
        self.waiting: dict[int, list[int]] = {}  # share -> heap of task indexes (= arrival order)
        self.waited = 0
        self.unplaceable = 0
        self.misses = 0
        self.staleness: list[float] = []
        self.events: list[tuple[float, int, int, int]] = []  # (time, kind, task, pool)
        self.allocs: dict[int, object] = {}
        self.count = 0

    # -- scoring ---------------------------------------------------------------------------

    def _shortlists(self) -> dict[int, I64]:
        """Per origin province, the pools best for it under the policy's static terms (a
        one-card, one-hour task with no data): the index candidates scored per decision."""
        out: dict[int, I64] = {}
        all_idx = np.arange(len(self.fed), dtype=np.int64)
        for o in sorted(set(self.tasks.origin.tolist())):
            static = self._score(all_idx, o, MILLI, 3600.0, 0.0, None)
            k = min(INDEX_SCAN_LIMIT, len(all_idx))
            out[o] = np.sort(np.argpartition(static, k - 1)[:k]).astype(np.int64)
        return out

    def _columns(self) -> None:
        """Per origin province, the fastscore column block of every pool (static in a run)."""
        fed = self.fed
        dest = fed.province
        for o in sorted(set(self.tasks.origin.tolist())):
            rtt = self.rtt[o, dest]
            self.cols[o] = np.stack(
                [
                    rtt / 1000,
                    1e9 * BITS_PER_BYTE / self.bits_per_s[o, dest],
                    self.inv_ratio,
                    (dest != o).astype(np.float64),
                    fed.price * self.inv_ratio,
                    CARD_KW * fed.pue * fed.carbon * self.inv_ratio,
                    rtt,
                ]
            )

    def _score(
        self, idx: I64, origin: int, share: int, work_s: float, input_gb: float, free: I64 | None
    ) -> F64:
        """The policy's score of pools ``idx`` for one task (lower is better): the core's
        ``policies.score`` (in fastscore's matrix form) plus the core's load term."""
        if self.policy == "cheapest-first":
            return self.fed.price[idx]
        if self.policy == "first-fit":
            return idx.astype(np.float64)
        if self.policy == "random":
            return self.rng.random(len(idx))
        util = 1.0 - (free[idx] if free is not None else self.m.free[idx]) / self.total[idx]
        if self.policy == "least-loaded":
            return util
        coef = coefficients(share / MILLI, work_s, input_gb, EGRESS_PRICE_PER_GB)
        est = coef @ self.cols[origin][:, idx]
        return scores(self.core_policy, est) + self.lw * util

    def _best(self, idx: I64, j: int, free: I64 | None) -> int:
        t = self.tasks
        s = self._score(
            idx,
            int(t.origin[j]),
            int(t.share[j]),
            float(t.work_s[j]),
            float(t.input_gb[j]),
            free,
        )
        return int(idx[int(np.argmin(s))])

    # -- events ----------------------------------------------------------------------------

    def run(self, progress: Callable[[int], None] | None = None) -> ScaleResult:
        """Replay every task; returns when all have ended."""
        t = self.tasks
        arrivals = t.arrival_s.tolist()
        nxt = 0
        events = self.events
        next_refresh = self.index.delay_s
        tick = 0
        while nxt < len(arrivals) or events or self._anyone_waiting():
            t_arrival = arrivals[nxt] if nxt < len(arrivals) else float("inf")
            t_event = events[0][0] if events else float("inf")
            now = min(t_arrival, t_event)
            if now >= next_refresh:
                if now != float("inf") and not self.index.dirty:
                    # Nothing changed since the last refresh: skip to the last tick before now.
                    skipped = (now - next_refresh) // self.index.delay_s
                    next_refresh += skipped * self.index.delay_s
                    self.index.refreshed_s = next_refresh
                    next_refresh += self.index.delay_s
                    continue
                # Refresh the index and offer the changed pools to waiting tasks.
                at = next_refresh
                self._refresh(at)
                next_refresh = at + self.index.delay_s
                if now == float("inf") and not self.index.dirty:
                    raise InvalidInput("tasks wait for cards that no pool can free")
                continue
            self.count += 1
            if t_event <= t_arrival:
                _, kind, j, p = heapq.heappop(events)
                if kind == 0:
                    self._end(j, p)
                    tick += 1
                else:
                    self._deliver(j, p, now)
            else:
                self._arrive(nxt, now)
                nxt += 1
            if progress is not None and tick >= 1000:
                progress(tick)
                tick = 0
        if progress is not None and tick:
            progress(tick)
        return ScaleResult(
            self.policy,
            self.start,
            self.end,
            self.pool,
            self.forwarded,
            self.misses,
            self.waited,
            np.array(self.staleness),
            self.index.delay_s,
            self.count,
        )

    def _anyone_waiting(self) -> bool:
        return any(self.waiting.values())

    def _arrive(self, j: int, now: float) -> None:
        t = self.tasks
        share = int(t.share[j])
        if not self._capable(share):
            self.unplaceable += 1
            return
        own = self.own[int(t.node[j])]
        room = own[self.m.fits_mask(own, share)]
        if len(room):
            self._start(j, self._best(room, j, None), now)
            return
        cand = self.shortlist[int(t.origin[j])]
        shows = self.index.room[share]
        room = cand[shows[cand]]
        if len(room) == 0:
            # Beyond the shortlist: any pool the index shows with room.
            room = np.flatnonzero(shows)
        self.staleness.append(now - self.index.refreshed_s)
        if len(room):
            self._forward(j, self._best(room, j, self.index.free), now)
        else:
            self._wait(j)

    def _capable(self, share: int) -> bool:
        # Whether any pool could ever take the share (else the task can never run).
        return share < MILLI or share // MILLI <= self.max_gang

    def _forward(self, j: int, p: int, now: float) -> None:
        origin = int(self.tasks.origin[j])
        latency_s = self.rtt[origin, int(self.fed.province[p])] / 2000
        self.forwarded[j] = True
        heapq.heappush(self.events, (now + latency_s, 1, j, p))

    def _deliver(self, j: int, p: int, now: float) -> None:
        share = int(self.tasks.share[j])
        if self.m.fits(p, share):
            self._start(j, p, now)
        else:
            self.misses += 1
            self.forwarded[j] = False
            self._wait(j)

    def _wait(self, j: int) -> None:
        heapq.heappush(self.waiting.setdefault(int(self.tasks.share[j]), []), j)
        self.waited += 1

    def _start(self, j: int, p: int, now: float) -> None:
        t = self.tasks
        share = int(t.share[j])
        self.allocs[j] = self.m.take(p, share)
        self.index.dirty.add(p)
        origin, dest = int(t.origin[j]), int(self.fed.province[p])
        transfer = (
            self.rtt[origin, dest] / 1000
            + float(t.input_gb[j]) * 1e9 * BITS_PER_BYTE / (self.bits_per_s[origin, dest])
        )
        end = now + transfer + float(t.work_s[j]) / float(self.ratio[p])
        self.start[j], self.end[j], self.pool[j] = now, end, p
        heapq.heappush(self.events, (end, 0, j, p))

    def _end(self, j: int, p: int) -> None:
        alloc = self.allocs.pop(j)
        self.m.release(alloc)  # type: ignore[arg-type]
        self.index.dirty.add(p)

    def _refresh(self, now: float) -> None:
        changed = self.index.refresh(now)
        if not changed or not self._anyone_waiting():
            return
        offered = np.array(changed, np.int64)
        heads = [(q[0], share) for share, q in self.waiting.items() if q]
        heapq.heapify(heads)
        while heads:
            _, share = heapq.heappop(heads)
            queue = self.waiting[share]
            room = offered[self.m.fits_mask(offered, share)]
            if not len(room):
                continue
            j = heapq.heappop(queue)
            p = self._best(room, j, None)
            self.staleness.append(0.0)
            if p >= self.fed.nodes[int(self.tasks.node[j])].own[0] and (
                p < self.fed.nodes[int(self.tasks.node[j])].own[1]
            ):
                self._start(j, p, now)
            else:
                # Placed from the fresh index: the owner takes it after the link latency;
                # hold the cards now so the next waiting task sees them taken.
                origin = int(self.tasks.origin[j])
                latency_s = self.rtt[origin, int(self.fed.province[p])] / 2000
                self.forwarded[j] = True
                self._start(j, p, now + latency_s)
            if queue:
                heapq.heappush(heads, (queue[0], share))
