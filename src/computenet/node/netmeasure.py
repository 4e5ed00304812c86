"""Network measurements: round-trip times gateways measure to their node, and child nodes
to their parent (see :mod:`computenet.federation.sync`).

Each heartbeat may carry the gateway's last measured RTT to the node (a timed call to
``/gateway/v1/ping``). The node keeps the samples with the regions at both ends: the
gateway's (the region of its pools) and its own (``--region``). ``latency_matrix`` turns the
recent samples into a region -> region table of round-trip times for the scheduler's
transfer estimate.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select

from computenet.node.tasks import utcnow
from computenet.store import tables as t
from computenet.store import tables_monitoring as m
from computenet.store.db import Database

WINDOW_S = 3600.0
RETENTION_S = 7 * 24 * 3600.0


def gateway_region(db: Database, gateway_id: str) -> str | None:
    """The region of a gateway: that of its first pool (None before it declares any)."""
    with db.read() as s:
        spec = s.scalars(
            select(t.Pool.spec).where(t.Pool.gateway_id == gateway_id).order_by(t.Pool.cpi)
        ).first()
    if spec is None:
        return None
    return str(spec.get("region", {}).get("code", "11"))


def record_rtt(
    db: Database, gateway_id: str, from_region: str, to_region: str, rtt_ms: float
) -> None:
    """Keep one RTT sample and drop samples past retention."""
    now = utcnow()
    with db.write() as s:
        s.add(
            m.RttSample(
                gateway_id=gateway_id,
                from_region=from_region,
                to_region=to_region,
                at=now,
                rtt_ms=rtt_ms,
            )
        )
        s.execute(delete(m.RttSample).where(m.RttSample.at < now - timedelta(seconds=RETENTION_S)))


def latency_matrix(db: Database, window_s: float = WINDOW_S) -> dict[tuple[str, str], float]:
    """(from region, to region) -> mean RTT in milliseconds over the last ``window_s``.

    Only measured pairs appear; a pair is measured in the direction gateway -> node.
    """
    since = utcnow() - timedelta(seconds=window_s)
    with db.read() as s:
        rows = s.execute(
            select(m.RttSample.from_region, m.RttSample.to_region, func.avg(m.RttSample.rtt_ms))
            .where(m.RttSample.at >= since)
            .group_by(m.RttSample.from_region, m.RttSample.to_region)
        )
        return {(a, b): float(v) for a, b, v in rows}
