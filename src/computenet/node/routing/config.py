"""Settings of the service router and metric plane (``NodeSettings.routing``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RoutingSettings:
    """Limits and windows of the data plane. Times are in seconds."""

    max_body_bytes: int = 4 * 1024 * 1024  # a service request's body
    stale_s: float = 3.0  # a replica whose gateway has not reported for this long gets no requests
    window_s: float = 10.0  # rates (requests/s, tokens/s) are taken over this window
    directory_ttl_s: float = 0.5  # how long the replica list of a service is reused
    node_url_ttl_s: float = 10.0  # how long a forward target's URL is reused (a database read)
    site_down_s: float = 5.0  # a node that failed a forward is passed over this long
    request_timeout_s: float = 300.0  # waiting for a forwarded node's response head
    max_hops: int = 4  # forwards a request may take between nodes
    # Site score weights (they need not sum to 1: they are normalized).
    weight_network: float = 0.5
    weight_compute: float = 0.3
    weight_cost: float = 0.2
