"""Gauges the shipped alerting rules need, read from the store at scrape time: budgets
nearly spent, queue waits against the scheduler's estimates, silent child nodes."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select

from computenet.node.tasks import utcnow
from computenet.store import tables as t
from computenet.store import tables_monitoring as m
from computenet.store.db import Database
from computenet.store.tables_billing import Budget
from computenet.store.tables_federation import FedChild

WAIT_WINDOW_S = 3600.0


class OpsCollector(Collector):
    """Budget use per tenant, queue wait over estimate, and silent children."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        spent = GaugeMetricFamily(
            "computenet_budget_spent_ratio",
            "Fraction of each tenant's monthly budget charged this month (UTC)",
            labels=["tenant"],
        )
        warn = GaugeMetricFamily(
            "computenet_budget_warn_ratio",
            "The fraction of its budget at which each tenant is warned",
            labels=["tenant"],
        )
        over = GaugeMetricFamily(
            "computenet_queue_wait_over_estimate_ratio",
            "Mean actual / estimated queue wait of tasks started in the last hour that had "
            "an estimate (absent when none had)",
        )
        silent = GaugeMetricFamily(
            "computenet_federation_child_silent",
            "1 while an enrolled child node has missed the sync timeout, else 0",
            labels=["child"],
        )
        now = utcnow()
        period = now.strftime("%Y-%m")
        since = now - timedelta(seconds=WAIT_WINDOW_S)
        with self.db.read() as s:
            budgets = list(s.scalars(select(Budget)))
            waits = list(
                s.execute(
                    select(t.Task.created_at, t.Task.started_at, m.TaskTiming.queue_wait_estimate_s)
                    .join(m.TaskTiming, m.TaskTiming.task_id == t.Task.id)
                    .where(t.Task.started_at >= since, m.TaskTiming.queue_wait_estimate_s > 0)
                )
            )
            children = list(s.execute(select(FedChild.code, FedChild.silent)))
        for b in budgets:
            used = b.spent if b.period == period else 0
            if b.monthly_limit > 0:
                spent.add_metric([b.tenant], float(used / b.monthly_limit))
                warn.add_metric([b.tenant], float(b.warn_fraction))
        ratios = [
            (started - created).total_seconds() / est
            for created, started, est in waits
            if started is not None and est
        ]
        if ratios:
            over.add_metric([], statistics.fmean(ratios))
        for code, is_silent in children:
            silent.add_metric([code], 1.0 if is_silent else 0.0)
        yield spent
        yield warn
        yield over
        yield silent
