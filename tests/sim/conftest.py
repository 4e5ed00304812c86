"""A tiny hand-checkable topology shared by the simulator tests."""

from __future__ import annotations

import pytest

from computenet.sim.topology import Topology
from simpools import pool


@pytest.fixture
def two_pools() -> Topology:
    """A slow cheap pool and a fast dear pool, two cards each, at one site."""
    return Topology(
        pools=(pool("cn.31/a/slow", "slow-card", 2, "1"), pool("cn.31/a/fast", "fast-card", 2, "4"))
    )
