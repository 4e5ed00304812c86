"""Node configuration, set from the command line or by tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    max_body_bytes: int = 8 * 1024 * 1024
    region: str = "11"  # GB/T 2260 code of this node, one end of measured RTTs
    quality_sample_s: float = 10.0
