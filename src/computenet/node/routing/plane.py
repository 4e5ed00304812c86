"""The metric plane: what the router knows of each replica and site, in CATS terms.

Gateways report raw per-replica counters over their tunnels (level 0); the plane turns them
into rates over a window, scores each site per category (level 1) and overall, 0-10 (level
2), and answers the two questions the rest of the node asks: is a replica healthy (a live
tunnel, a recent report, passing health checks) and how loaded is a service (the autoscaler's
only input).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter

from computenet.model.service import (
    CategoryScore,
    CatsMetric,
    LatencySeries,
    MetricCategory,
    ReplicaMetrics,
    ServiceBinding,
    ServiceLatency,
    ServiceLoad,
    SiteMetrics,
)
from computenet.model.task import TaskState
from computenet.node.routing.collector import PlaneCollector
from computenet.node.routing.config import RoutingSettings
from computenet.node.routing.latency import (
    SLOT_S,
    Latency,
    latency_metrics,
    latency_points,
)
from computenet.node.routing.select import Site, rank_sites, region_rtt_ms
from computenet.node.routing.tunnels import TunnelHub

log = logging.getLogger("computenet.node.routing")


class Placement(Protocol):
    """A replica as the service directory lists it (``node.services.ReplicaPlacement``)."""

    @property
    def task_id(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def replica(self) -> int: ...
    @property
    def state(self) -> TaskState: ...
    @property
    def gateway_id(self) -> str | None: ...
    @property
    def node_code(self) -> str: ...
    @property
    def region(self) -> str | None: ...
    @property
    def price_per_card_hour(self) -> Decimal | None: ...
    @property
    def binding(self) -> ServiceBinding: ...


class Directory(Protocol):
    """Where the router finds a service's replicas (``rt.services``)."""

    def replicas(self, name: str) -> list[Any]: ...

    def find(self, name: str) -> Any: ...


@dataclass
class _Replica:
    """The latest report on one replica, and counter samples for its rates."""

    gateway_id: str
    at: float
    healthy: bool = False
    in_flight: int = 0
    check_ms: float | None = None
    samples: deque[tuple[float, int, int]] = field(default_factory=deque)  # at, requests, tokens

    def rate(self, window_s: float) -> tuple[float, float | None]:
        """Requests/s and tokens/s over the samples in the window (tokens None if none seen)."""
        if len(self.samples) < 2:
            return 0.0, None
        t0, r0, k0 = self.samples[0]
        t1, r1, k1 = self.samples[-1]
        span = max(t1 - t0, 1e-6)
        return (r1 - r0) / span, ((k1 - k0) / span if k1 > 0 else None)


@dataclass(frozen=True)
class _ChildReport:
    """A child node's word on one replica under it, carried up by federation sync."""

    at: float
    healthy: bool
    in_flight: int


@dataclass
class _Rate:
    """Events counted in one-second buckets over a window (requests forwarded to a node)."""

    buckets: deque[list[int]] = field(default_factory=deque)  # [second, count]

    def add(self, now: float, window_s: float) -> None:
        second = int(now)
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([second, 1])
        while self.buckets and self.buckets[0][0] < second - window_s:
            self.buckets.popleft()

    def per_s(self, now: float, window_s: float) -> float:
        return sum(c for s, c in self.buckets if s >= now - window_s) / window_s


class MetricPlane:
    """Per-replica reports from this node's gateways, the router's own counts, and scores."""

    def __init__(
        self,
        settings: RoutingSettings,
        node_code: str,
        region: str,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` is monotonic seconds; tests pass their own to age reports."""
        self.settings = settings
        self.node_code = node_code
        self.region = region
        self.clock = clock
        self.directory: Directory | None = None  # set by the runtime (``rt.services``)
        # Region pairs -> measured RTT (ms), read from the store by ``refresh_loop``.
        self.measured_rtt: Callable[[], dict[tuple[str, str], float]] = dict
        self._rtt: dict[tuple[str, str], float] = {}
        self.tunnels = TunnelHub(self.report)
        self.tunnels.on_change.append(self._tunnel_changed)
        self._replicas: dict[str, _Replica] = {}
        self._routed: defaultdict[str, int] = defaultdict(int)  # task id or node -> in flight
        self._down_until: dict[str, float] = {}  # node code -> passed over until
        self._forwarded: defaultdict[str, _Rate] = defaultdict(_Rate)  # node code -> rate
        self._remote: dict[str, str] = {}  # replica task id -> the node it runs under
        self._cache: dict[str, tuple[float, list[Any]]] = {}
        self._known: dict[str, tuple[float, bool]] = {}  # name -> (until, known here)
        self._urls: dict[str, tuple[float, str]] = {}  # node code -> (until, its URL)
        self._tenants: dict[str, str] = {}  # service -> the tenant it bills (home node only)
        # Requests each replica (task id) on this node's gateways served, since start: the
        # metering round writes them to the bill (``billing.metering``). One increment a
        # request on the hot path; the metering thread only copies the dict.
        self.served: defaultdict[str, int] = defaultdict(int)
        self._latency: dict[str, Latency] = {}  # task id or node code -> router-observed
        # (child node, replica task id) -> that child's last word on the replica
        self._child: dict[tuple[str, str], _ChildReport] = {}
        self.requests = Counter(
            "computenet_service_requests",
            "Service requests routed by this node, by service, tenant and outcome",
            ["service", "tenant", "outcome"],
            registry=registry,
        )
        if registry is not None:
            registry.register(PlaneCollector(self))
        self._http: httpx.AsyncClient | None = None

    def http_client(self) -> httpx.AsyncClient:
        """The client that forwards requests to other nodes (made on first use, on the
        server's event loop)."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.request_timeout_s, connect=5.0),
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
            )
        return self._http

    async def aclose(self) -> None:
        """Close the forwarding client."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def refresh_loop(self, period_s: float = 10.0) -> None:
        """Keep the measured round trips fresh, off the event loop."""
        while True:
            try:
                self._rtt = await asyncio.to_thread(self.measured_rtt)
            except Exception:
                log.exception("reading measured round trips failed")
            await asyncio.sleep(period_s)

    # ---- inputs ---------------------------------------------------------------------

    def report(self, gateway_id: str, data: dict[str, Any]) -> None:
        """Take a gateway's report (a REPORT frame)."""
        now = self.clock()
        replicas = data.get("replicas", {})
        if not isinstance(replicas, dict):
            return
        for task_id, r in replicas.items():
            rep = self._replicas.get(task_id)
            if rep is None:
                rep = self._replicas[task_id] = _Replica(gateway_id, now)
            rep.gateway_id, rep.at = gateway_id, now
            rep.healthy = bool(r.get("healthy"))
            rep.in_flight = int(r.get("in_flight", 0))
            rep.check_ms = r.get("check_ms")
            rep.samples.append((now, int(r.get("requests", 0)), int(r.get("tokens", 0))))
            while rep.samples and rep.samples[0][0] < now - self.settings.window_s:
                rep.samples.popleft()

    def _tunnel_changed(self, gateway_id: str, up: bool) -> None:
        if not up:  # its replicas are unreachable at once, not when their reports age out
            for rep in self._replicas.values():
                if rep.gateway_id == gateway_id:
                    rep.healthy = False

    def routed(self, key: str, delta: int) -> None:
        """Count a request this node sends to a replica (task id) or a node (its code)."""
        self._routed[key] += delta
        if delta > 0 and key not in self._replicas:
            self._forwarded[key].add(self.clock(), self.settings.window_s)

    def site_failed(self, code: str) -> None:
        """A forward to node ``code`` failed: pass it over for a while."""
        self._down_until[code] = self.clock() + self.settings.site_down_s
        self._urls.pop(code, None)  # it may have moved: look it up again

    async def node_url(self, code: str, lookup: Callable[[str], str]) -> str:
        """The URL of node ``code``: ``lookup`` (a database read, run in a worker thread) at
        most once per ``node_url_ttl_s``, not once per forwarded request."""
        hit = self._urls.get(code)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        url = await asyncio.to_thread(lookup, code)
        if len(self._urls) > 10_000:
            self._urls.clear()
        self._urls[code] = (self.clock() + self.settings.node_url_ttl_s, url)
        return url

    def tenant(self, name: str) -> str:
        """The tenant a service's requests are counted for (``-`` where unknown)."""
        return self._tenants.get(name, "-")

    def count(self, name: str, outcome: str) -> None:
        """Count one request of a service by its tenant and outcome."""
        self.requests.labels(name, self.tenant(name), outcome).inc()

    def served_counts(self) -> dict[str, int]:
        """A copy of :attr:`served`, safe to take from another thread (one C-level copy)."""
        return self.served.copy()

    def site_up(self, code: str) -> bool:
        """Whether node ``code`` is not being passed over after a failed forward."""
        return self._down_until.get(code, 0.0) <= self.clock()

    def observe(self, key: str, ttfb_ms: float, total_ms: float) -> None:
        """Count a request's latency as the router saw it, to a replica (task id) or a node
        (its code): time to its first byte and to its last."""
        lat = self._latency.get(key)
        if lat is None:
            if len(self._latency) > 10_000:  # bounded: replicas and nodes come and go
                self._latency.clear()
            lat = self._latency[key] = Latency()
        lat.observe(self.clock(), ttfb_ms, total_ms)

    def health_report(self) -> dict[str, Any]:
        """What this node tells its parent at each sync: each replica it routes to, healthy
        or not, and its in-flight requests (a child's own children's replicas included, as
        they told it)."""
        out = {}
        for task_id in [*self._replicas, *self._remote]:
            out[task_id] = {"healthy": self.healthy(task_id), "in_flight": self.in_flight(task_id)}
        return {"replicas": out} if out else {}

    def child_report(self, child: str, data: dict[str, Any]) -> None:
        """Take a child's ``health_report`` (through federation sync)."""
        replicas = data.get("replicas")
        if not isinstance(replicas, dict):
            return
        now = self.clock()
        if len(self._child) > 100_000:
            self._child.clear()
        for task_id, r in list(replicas.items())[:10_000]:
            if isinstance(task_id, str) and isinstance(r, dict):
                flight = r.get("in_flight", 0)
                self._child[child, task_id] = _ChildReport(
                    now,
                    r.get("healthy") is True,
                    flight if isinstance(flight, int) and flight >= 0 else 0,
                )

    def _reported(self, task_id: str, node: str) -> _ChildReport | None:
        """The child's fresh report on a replica under it (older than ``stale_s``: none)."""
        rep = self._child.get((node, task_id))
        if rep is None or self.clock() - rep.at > self.settings.stale_s:
            return None
        return rep

    # ---- questions ------------------------------------------------------------------

    def healthy(self, task_id: str) -> bool:
        """A live tunnel to its gateway, a recent report, and passing health checks. A
        replica under another node is healthy as that node last said through federation sync
        (fresh within ``stale_s``) and while it answers forwards; with no fresh word from it,
        while it answers forwards."""
        node = self._remote.get(task_id)
        if node is not None:
            said = self._reported(task_id, node)
            return self.site_up(node) and (said is None or said.healthy)
        rep = self._replicas.get(task_id)
        if rep is None or not rep.healthy:
            return False
        if self.clock() - rep.at > self.settings.stale_s:
            return False
        return self.tunnels.get(rep.gateway_id) is not None

    def gateway_of(self, task_id: str) -> str | None:
        """The gateway that last reported on a replica."""
        rep = self._replicas.get(task_id)
        return rep.gateway_id if rep is not None else None

    def in_flight(self, task_id: str) -> int:
        """Requests in flight on a replica: the larger of this node's count and its
        gateway's (which also counts requests other nodes routed to it)."""
        rep = self._replicas.get(task_id)
        return max(self._routed.get(task_id, 0), rep.in_flight if rep is not None else 0)

    def replicas(self, name: str) -> list[Any]:
        """The service's live replica placements, from the directory, reused briefly."""
        now = self.clock()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = self.directory.replicas(name) if self.directory is not None else []
        if self.directory is not None and name not in self._tenants:
            view = self.directory.find(name)
            # Only the home node knows whose service it is; elsewhere requests count as "-".
            self._tenants[name] = str(getattr(view, "tenant", "-")) if view is not None else "-"
        live = [p for p in found if p.state in (TaskState.RUNNING, TaskState.INITIALIZING)]
        for p in live:
            if p.gateway_id is None and p.node_code != self.node_code:
                if p.state == TaskState.RUNNING:
                    self._remote[p.task_id] = p.node_code
                else:
                    self._remote.pop(p.task_id, None)
        if len(self._cache) > 10_000:
            self._cache.clear()
            self._tenants.clear()
        self._cache[name] = (now + self.settings.directory_ttl_s, live)
        return live

    async def known_async(self, name: str) -> bool:
        """Whether this node knows the service at all (homed here, or with a replica task
        here in any live state), read fresh: a service whose replicas are still starting is
        not "unknown" (503, try again), whatever the brief copy of its live replicas says."""
        directory = self.directory
        if directory is None:
            return False
        # Kept as briefly as the replicas' copy: a client retrying a name that does not
        # exist costs one read per period, not one per request.
        now = self.clock()
        hit = self._known.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        known = await asyncio.to_thread(
            lambda: directory.find(name) is not None or bool(directory.replicas(name))
        )
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[name] = (now + self.settings.directory_ttl_s, known)
        return known

    async def replicas_async(self, name: str) -> list[Any]:
        """``replicas``, reading the directory in a worker thread when its copy is old."""
        hit = self._cache.get(name)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        return await asyncio.to_thread(self.replicas, name)

    def service_load(self, name: str) -> ServiceLoad:
        """In flight (all and per replica), requests/s and tokens/s of a service here.

        Replicas on this node's gateways count what their gateways report; replicas under
        other nodes share what this node forwards to that node."""
        now, w = self.clock(), self.settings.window_s
        per: dict[str, int] = {}
        rps, tps, any_tokens = 0.0, 0.0, False
        placed = self.replicas(name)
        remote: defaultdict[str, int] = defaultdict(int)
        for p in placed:
            if p.task_id in self._remote:
                remote[self._remote[p.task_id]] += 1
        for code in remote:
            rps += self._forwarded[code].per_s(now, w) if code in self._forwarded else 0.0
        for p in placed:
            under = self._remote.get(p.task_id)
            if under is not None:
                per[p.task_id] = -(-self._routed.get(under, 0) // remote[under])  # ceiling
                continue
            per[p.task_id] = self.in_flight(p.task_id)
            rep = self._replicas.get(p.task_id)
            if rep is not None:
                r, k = rep.rate(w)
                rps += r
                if k is not None:
                    tps, any_tokens = tps + k, True
        return ServiceLoad(
            service=name,
            in_flight=sum(per.values()),
            per_replica=per,
            requests_per_s=round(rps, 3),
            tokens_per_s=round(tps, 3) if any_tokens else None,
            window_s=w,
        )

    def sites(self, name: str, client_region: str | None) -> list[Site]:
        """Candidate sites of a service for a client in ``client_region``: this node when a
        gateway of its runs a replica, and every other node that runs one."""
        measured = self._rtt
        groups: dict[str, list[Any]] = defaultdict(list)
        for p in self.replicas(name):
            local = p.node_code == self.node_code or p.gateway_id is not None
            groups[self.node_code if local else p.node_code].append(p)
        out = []
        for code, ps in groups.items():
            local = code == self.node_code
            healthy = [p for p in ps if self.healthy(p.task_id)]
            region = ps[0].region
            if local:
                inflight = sum(self.in_flight(p.task_id) for p in ps)
            else:  # what the child counts (all its clients) when it said, else what we sent
                said = [r for p in ps if (r := self._reported(p.task_id, code)) is not None]
                inflight = max(self._routed.get(code, 0), sum(r.in_flight for r in said))
            out.append(
                Site(
                    code=code,
                    region=region,
                    local=local,
                    healthy_replicas=len(healthy),
                    in_flight=inflight,
                    price_per_card_hour=float(min(p.price_per_card_hour or 0 for p in ps)),
                    rtt_ms=region_rtt_ms(client_region, region, measured),
                    down=not local and not self.site_up(code),
                )
            )
        return out

    def weights(self) -> dict[MetricCategory, float]:
        """The site score weights from the settings."""
        s = self.settings
        return {
            MetricCategory.NETWORK: s.weight_network,
            MetricCategory.COMPUTE: s.weight_compute,
            MetricCategory.COST: s.weight_cost,
        }

    # ---- views ----------------------------------------------------------------------

    def replica_metrics(self, name: str) -> list[ReplicaMetrics]:
        """Raw metrics (level 0) of each replica this node knows."""
        out = []
        now, w = self.clock(), self.settings.window_s
        for p in self.replicas(name):
            rep = self._replicas.get(p.task_id)
            src = f"gateway:{rep.gateway_id}" if rep is not None else f"node:{p.node_code}"
            rps, tps = rep.rate(w) if rep is not None else (0.0, None)
            raw = [
                CatsMetric(
                    name="in_flight",
                    category=MetricCategory.COMPUTE,
                    value=self.in_flight(p.task_id),
                    unit="requests",
                    source=src,
                    statistic="current",
                    window_s=0,
                ),
                CatsMetric(
                    name="requests_per_s",
                    category=MetricCategory.COMPUTE,
                    value=round(rps, 3),
                    unit="1/s",
                    source=src,
                    statistic="rate",
                    window_s=w,
                ),
                CatsMetric(
                    name="tokens_per_s",
                    category=MetricCategory.COMPUTE,
                    value=round(tps, 3) if tps is not None else None,
                    unit="tokens/s",
                    source=src,
                    statistic="rate",
                    window_s=w,
                ),
                CatsMetric(
                    name="health_check_ms",
                    category=MetricCategory.NETWORK,
                    value=rep.check_ms if rep is not None else None,
                    unit="ms",
                    source=src,
                    statistic="current",
                    window_s=0,
                ),
                *latency_metrics(self._latencies([p.task_id]), now, w, f"node:{self.node_code}"),
            ]
            out.append(
                ReplicaMetrics(
                    task_id=p.task_id,
                    service=name,
                    version=p.version,
                    replica=p.replica,
                    node_code=p.node_code,
                    gateway_id=p.gateway_id,
                    region=p.region,
                    healthy=self.healthy(p.task_id),
                    in_flight=self.in_flight(p.task_id),
                    metrics=raw,
                )
            )
        return out

    def site_metrics(self, name: str, client_region: str | None) -> list[SiteMetrics]:
        """Each site with raw metrics, category scores and overall score, best first."""
        out = []
        now, w = self.clock(), self.settings.window_s
        me = f"node:{self.node_code}"
        placed = self.replicas(name)
        for site, cats, total in rank_sites(self.sites(name, client_region), self.weights()):
            keys = self._site_keys(site.code, placed)
            raw = [
                CatsMetric(
                    name="rtt_ms",
                    category=MetricCategory.NETWORK,
                    value=round(site.rtt_ms, 3),
                    unit="ms",
                    source=me,
                    statistic="mean",
                    window_s=w,
                ),
                CatsMetric(
                    name="in_flight",
                    category=MetricCategory.COMPUTE,
                    value=site.in_flight,
                    unit="requests",
                    source=me,
                    statistic="current",
                    window_s=0,
                ),
                CatsMetric(
                    name="price_per_card_hour",
                    category=MetricCategory.COST,
                    value=site.price_per_card_hour,
                    unit="CNY/card-hour",
                    source="spec",
                    statistic="current",
                    window_s=0,
                ),
                *latency_metrics(self._latencies(keys), now, w, me),
            ]
            ages = [now - r.at for k in keys if (r := self._reported(k, site.code)) is not None]
            scores = [
                CategoryScore(category=c, score=v, source=me, statistic="current", window_s=w)
                for c, v in cats.items()
            ]
            out.append(
                SiteMetrics(
                    site=site.code,
                    region=site.region,
                    replicas=len(keys) - (0 if site.local else 1),  # less the node's own key
                    healthy_replicas=site.healthy_replicas,
                    metrics=raw,
                    scores=scores,
                    overall=total,
                    health_age_s=round(max(ages), 3) if ages else None,
                )
            )
        return out

    def _site_keys(self, code: str, placed: list[Any]) -> list[str]:
        """The latency keys of a site: its replicas' task ids, and for another node also its
        code (what this node forwarded there is counted under the node)."""
        keys = [
            p.task_id
            for p in placed
            if (self.node_code if p.node_code == self.node_code or p.gateway_id else p.node_code)
            == code
        ]
        return keys if code == self.node_code else [*keys, code]

    def _latencies(self, keys: list[str]) -> list[Latency]:
        return [lat for k in keys if (lat := self._latency.get(k)) is not None]

    def latency(self, name: str, wall_now: float) -> ServiceLatency:
        """p50/p95 latency over time of each site of a service and of each replica on this
        node's gateways."""
        now = self.clock()
        placed = self.replicas(name)
        series = []
        for site in self.sites(name, None):
            keys = self._site_keys(site.code, placed)
            series.append(
                LatencySeries(
                    kind="site",
                    key=site.code,
                    label=f"site {site.code}",
                    region=site.region,
                    points=latency_points(self._latencies(keys), now, wall_now),
                )
            )
        for p in placed:
            if p.task_id in self._latency and p.task_id not in self._remote:
                series.append(
                    LatencySeries(
                        kind="replica",
                        key=p.task_id,
                        label=f"replica #{p.replica} ({p.version})",
                        region=p.region,
                        points=latency_points([self._latency[p.task_id]], now, wall_now),
                    )
                )
        return ServiceLatency(service=name, slot_s=SLOT_S, series=series)

    def known(self) -> Iterator[tuple[str, _Replica]]:
        """Every replica reported on (for /metrics)."""
        yield from list(self._replicas.items())

    def latencies(self) -> Iterator[tuple[str, Latency]]:
        """Every latency histogram, by target: a replica's task id, or ``node:<code>`` for
        what this node forwarded to another (for /metrics)."""
        for key, lat in list(self._latency.items()):
            yield (key if key in self._replicas else f"node:{key}"), lat
