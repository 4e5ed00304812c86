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
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from computenet.model.service import (
    CategoryScore,
    CatsMetric,
    MetricCategory,
    ReplicaMetrics,
    ServiceBinding,
    ServiceLoad,
    SiteMetrics,
)
from computenet.model.task import TaskState
from computenet.node.routing.config import RoutingSettings
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
        self._urls: dict[str, tuple[float, str]] = {}  # node code -> (until, its URL)
        self._tenants: dict[str, str] = {}  # service -> the tenant it bills (home node only)
        self.requests = Counter(
            "computenet_service_requests",
            "Service requests routed by this node, by service, tenant and outcome",
            ["service", "tenant", "outcome"],
            registry=registry,
        )
        if registry is not None:
            registry.register(_PlaneCollector(self))
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

    def site_up(self, code: str) -> bool:
        """Whether node ``code`` is not being passed over after a failed forward."""
        return self._down_until.get(code, 0.0) <= self.clock()

    # ---- questions ------------------------------------------------------------------

    def healthy(self, task_id: str) -> bool:
        """A live tunnel to its gateway, a recent report, and passing health checks. A
        replica under another node is healthy while that node answers its forwards (that node
        checks its replica; this one sees only whether it serves)."""
        node = self._remote.get(task_id)
        if node is not None:
            return self.site_up(node)
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
            healthy = [p for p in ps if self.healthy(p.task_id)] if local else ps
            region = ps[0].region
            inflight = (
                sum(self.in_flight(p.task_id) for p in ps) if local else self._routed.get(code, 0)
            )
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
        w = self.settings.window_s
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
        w = self.settings.window_s
        me = f"node:{self.node_code}"
        for site, cats, total in rank_sites(self.sites(name, client_region), self.weights()):
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
            ]
            scores = [
                CategoryScore(category=c, score=v, source=me, statistic="current", window_s=w)
                for c, v in cats.items()
            ]
            out.append(
                SiteMetrics(
                    site=site.code,
                    region=site.region,
                    replicas=sum(
                        1
                        for p in self.replicas(name)
                        if (p.node_code if p.gateway_id is None else self.node_code) == site.code
                    ),
                    healthy_replicas=site.healthy_replicas,
                    metrics=raw,
                    scores=scores,
                    overall=total,
                )
            )
        return out

    def known(self) -> Iterator[tuple[str, _Replica]]:
        """Every replica reported on (for /metrics)."""
        yield from list(self._replicas.items())


class _PlaneCollector(Collector):
    """Per-replica gauges read at scrape time."""

    def __init__(self, plane: MetricPlane) -> None:
        self.plane = plane

    def collect(self) -> Iterator[GaugeMetricFamily]:
        inflight = GaugeMetricFamily(
            "computenet_service_replica_in_flight",
            "Requests in flight on each replica a gateway of this node runs",
            labels=["task"],
        )
        healthy = GaugeMetricFamily(
            "computenet_service_replica_healthy",
            "1 when a replica is routable: live tunnel, recent report, passing checks",
            labels=["task"],
        )
        rps = GaugeMetricFamily(
            "computenet_service_replica_requests_per_second",
            "Requests per second on each replica over the metric window",
            labels=["task"],
        )
        for task_id, rep in self.plane.known():
            inflight.add_metric([task_id], self.plane.in_flight(task_id))
            healthy.add_metric([task_id], 1.0 if self.plane.healthy(task_id) else 0.0)
            rps.add_metric([task_id], rep.rate(self.plane.settings.window_s)[0])
        yield inflight
        yield healthy
        yield rps
