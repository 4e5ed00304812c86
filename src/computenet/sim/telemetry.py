"""Gateways' heartbeats in virtual time: when each pool was last heard from, and its health.

A gateway heartbeats all the time, except during an :class:`Outage`: its last heartbeat is
at the outage's start, and it heartbeats again at its end. Every health decision is the
live node's (:mod:`computenet.tasks.health`): a heartbeat makes a pool healthy, a pool
silent longer than the timeout turns unhealthy. This module only says who was heard when.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from computenet.errors import InvalidInput
from computenet.model.pool import PoolHealth
from computenet.tasks.health import Beat, heard

# The live node's defaults (NodeSettings; tests/sim checks they agree).
LEASE_TTL_S = 30.0
HEARTBEAT_TIMEOUT_S = 20.0
HOUSEKEEPING_S = 1.0  # how often the node looks for silent pools and expired leases
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Outage:
    """The gateway of ``pools`` heartbeats last at ``start_s`` and again at ``end_s``."""

    pools: tuple[str, ...]
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not self.pools or not 0 <= self.start_s < self.end_s or math.isinf(self.end_s):
            raise InvalidInput(
                f"an outage names pools and ends after it starts: {self.pools} "
                f"{self.start_s}..{self.end_s}"
            )

    def silences(self, now_s: float) -> bool:
        """True while the gateway is silent: after its last heartbeat, before the next."""
        return self.start_s < now_s < self.end_s


@dataclass(frozen=True)
class Dispatch:
    """The node's dispatch settings the simulated gateways live under."""

    lease_ttl_s: float = LEASE_TTL_S
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    housekeeping_s: float = HOUSEKEEPING_S
    max_attempts: int = MAX_ATTEMPTS


class Heartbeats:
    """Each pool's health and last heartbeat (virtual seconds), as the node records them."""

    def __init__(self, pools: Iterable[str], outages: Sequence[Outage], dispatch: Dispatch) -> None:
        self.health = {p: PoolHealth.HEALTHY for p in pools}
        self.last_s = dict.fromkeys(self.health, 0.0)
        self.dispatch = dispatch
        self._outages: dict[str, list[Outage]] = {}
        for o in sorted(outages, key=lambda o: o.start_s):
            for p in o.pools:
                if p not in self.health:
                    raise InvalidInput(f"an outage names pool {p}, which is not in the topology")
                self._outages.setdefault(p, []).append(o)

    def silent_until(self, pool: str, now_s: float) -> float | None:
        """When ``pool``'s gateway, silent at ``now_s``, heartbeats again; None if it is not."""
        return next((o.end_s for o in self._outages.get(pool, ()) if o.silences(now_s)), None)

    def up(self, pool: str, now_s: float) -> bool:
        """True when ``pool``'s gateway is heartbeating at ``now_s``."""
        return self.silent_until(pool, now_s) is None

    def beat(self, now_s: float) -> None:
        """Record the heartbeats up to ``now_s``: a gateway that is up heartbeats now and
        vouches for its pools; a silent one was last heard at its outage's start."""
        for pool, outages in self._outages.items():
            silent = [o for o in outages if o.silences(now_s)]
            if silent:
                self.last_s[pool] = max(self.last_s[pool], silent[0].start_s)
        for pool in self.health:
            if self.up(pool, now_s):
                self.health[pool] = heard(True)
                self.last_s[pool] = now_s

    def beats(self) -> list[Beat[float]]:
        """Every pool as the silence rule sees it."""
        return [Beat(p, h, self.last_s[p]) for p, h in self.health.items()]

    def checks_s(self) -> list[float]:
        """The housekeeping times at which an outage can change something: around its
        timeout and its leases' end (a housekeeping tick either side), and its end."""
        tick = self.dispatch.housekeeping_s
        out: set[float] = set()
        for o in {o for os in self._outages.values() for o in os}:
            for edge in (self.dispatch.heartbeat_timeout_s, self.dispatch.lease_ttl_s):
                k = math.floor((o.start_s + edge) / tick)
                out.update(x for x in (k * tick, (k + 1) * tick) if x > o.start_s)
            out.add(o.end_s)
        return sorted(out)
