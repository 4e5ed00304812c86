"""Prometheus metrics of a gateway, on its own registry; ``computenet gateway
--metrics-port`` serves them on loopback."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class GatewayMetrics:
    """What a gateway counts while it serves its backend."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.heartbeats = Counter(
            "computenet_gateway_heartbeats_sent", "Heartbeats the node answered", registry=r
        )
        self.lease_renewals = Counter(
            "computenet_gateway_lease_renewals", "Leases the node renewed", registry=r
        )
        self.leased = Counter("computenet_gateway_tasks_leased", "Tasks leased", registry=r)
        self.finished = Counter(
            "computenet_gateway_tasks_finished", "Final reports accepted", ["state"], registry=r
        )
        self.released = Counter(
            "computenet_gateway_tasks_released", "Tasks handed back to the node", registry=r
        )
        self.tracked = Gauge("computenet_gateway_jobs", "Jobs this gateway tracks now", registry=r)
        self.rtt_ms = Gauge("computenet_gateway_node_rtt_ms", "Last RTT to the node", registry=r)
        self.backend_up = Gauge(
            "computenet_gateway_backend_up", "1 when the backend answers, else 0", registry=r
        )
        self.errors = Counter(
            "computenet_gateway_errors", "Node unreachable or loop failures", ["kind"], registry=r
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``addr:port`` from a background thread."""
        start_http_server(port, addr=addr, registry=self.registry)
