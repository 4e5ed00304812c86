"""The scheduler core's entry points, kept here for existing importers.

The core is pure: events in (tasks, pools, a :class:`Context`), decisions out; no I/O. It
is split by responsibility: ``constraints`` (hard rules), ``estimates`` (time, cost,
carbon), ``policies`` (scores), ``fairshare`` (order), ``batch`` (a round), ``explain``
(why, and discovery).
"""

from __future__ import annotations

from computenet.sched.batch import shape_key
from computenet.sched.constraints import hard_reject
from computenet.sched.explain import describe, explain, rank_offers
from computenet.sched.fastround import schedule
from computenet.sched.types import (
    Context,
    Dataset,
    Decision,
    Estimate,
    Explanation,
    Link,
    PoolTelemetry,
    PoolView,
    Reservation,
    RunningTask,
    TaskView,
    TenantShare,
)

__all__ = [
    "Context",
    "Dataset",
    "Decision",
    "Estimate",
    "Explanation",
    "Link",
    "PoolTelemetry",
    "PoolView",
    "Reservation",
    "RunningTask",
    "TaskView",
    "TenantShare",
    "describe",
    "explain",
    "hard_reject",
    "rank_offers",
    "schedule",
    "shape_key",
]
