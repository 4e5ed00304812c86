"""What placed and running tasks hold of each pool (read by the placer and the federation
index, which offers the rest to other nodes)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from computenet.model.pool import Capacity
from computenet.store import tables as t
from computenet.tasks.lifecycle import HOLDING_STATES


def held_capacity(s: Session) -> dict[str, Capacity]:
    """Per local pool, what placed and active tasks hold (pools with none are left out)."""
    return {
        cpi: Capacity(cpu_cores=c or 0, memory_mib=m or 0, accelerators=a or 0)
        for cpi, c, m, a in s.execute(
            select(
                t.Task.pool_cpi,
                func.sum(t.Task.cpu_cores),
                func.sum(t.Task.memory_mib),
                func.sum(t.Task.accelerators),
            )
            .where(
                t.Task.pool_cpi.is_not(None),
                t.Task.state.in_(HOLDING_STATES),
            )
            .group_by(t.Task.pool_cpi)
        )
        if cpi is not None  # by the query
    }
