"""Node configuration, set from the command line or by tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from computenet.node.routing.config import RoutingSettings


@dataclass
class NodeSettings:
    """Everything a node needs to start. Times are in seconds."""

    data_dir: Path
    db_url: str | None = None  # default: SQLite inside data_dir
    node_code: str = "cn"
    level: str = "national"
    name: str = "ComputeNet node"
    lease_ttl_s: float = 30.0
    heartbeat_s: float = 5.0
    heartbeat_timeout_s: float = 20.0
    max_attempts: int = 3
    housekeeping_s: float = 1.0
    services_reconcile_s: float = 1.0  # how often the service controller reconciles
    service_segment_s: int = 24 * 3600  # a replica task's run before a fresh one replaces it
    # A running replica is billed for each interval of this length as it elapses.
    service_metering_interval_s: int = 300
    leader_check_s: float = 1.0  # how often a standby replica tries to become the leader
    max_body_bytes: int = 8 * 1024 * 1024
    routing: RoutingSettings = field(default_factory=RoutingSettings)  # services data plane
    rate_limit_per_s: float = 1000.0  # requests a second per token (0: no limit)
    rate_limit_burst: float = 2000.0
    url_allow: tuple[str, ...] = ()  # data URLs tasks may name beyond public addresses
    url_deny: tuple[str, ...] = ()  # networks or hosts refused even when public
    secrets_key_file: Path | None = None  # default: <data_dir>/secrets.key
    tls_cert: Path | None = None  # with tls_key: serve HTTPS
    tls_key: Path | None = None
    # Federation: this node's URL as others reach it, and its parent when it is a child.
    public_url: str = ""
    parent_url: str | None = None
    enrol_token: str | None = None
    fed_sync_s: float = 0.5  # push/pull period of the pool index and forwarded tasks
    fed_timeout_s: float = 10.0  # a silent child's pools turn unavailable after this
    resolve_ttl_s: float = 30.0
    region: str = "11"  # GB/T 2260 code of this node, one end of measured RTTs
    quality_sample_s: float = 10.0
