"""Running service replicas' interim usage in the console's usage series.

A replica's attempt is billed in intervals as it runs (``billing.metering``) and closed by
its usage record when it ends. The series count each interval at its time, and the usage
record for what the intervals had not billed, so the sums over time equal the attempt's usage
and charges exactly, without counting any second twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from computenet.node.access import Visibility
from computenet.store import tables as t
from computenet.store.tables_billing import FINAL, Charge, InterimUsage

ZERO = Decimal(0)


@dataclass(frozen=True)
class Interim:
    """One billed interval, as a point of a usage series."""

    at: datetime
    tenant: str | None
    owner: str
    pool_cpi: str
    accelerator_model: str | None
    card_hours: Decimal
    cpu_core_hours: Decimal
    pflops_hours_fp16: Decimal
    amount: Decimal


def closing_charge() -> ColumnElement[bool]:
    """The join condition of a usage record with its attempt's closing charge only."""
    u = t.UsageRecord
    return (
        (Charge.task_id == u.task_id)
        & (Charge.attempt == u.attempt)
        & (Charge.interval_index == FINAL)
    )


def intervals_since(s: Session, since: datetime, scope: Visibility | None) -> list[Interim]:
    """The intervals billed since ``since`` on tasks the caller may see."""
    i = InterimUsage
    q = (
        select(
            i.created_at,
            t.Task.tenant,
            t.Task.owner,
            i.pool_cpi,
            i.accelerator_model,
            i.card_hours,
            i.cpu_core_hours,
            i.pflops_hours_fp16,
            Charge.amount,
        )
        .join(t.Task, t.Task.id == i.task_id)
        .outerjoin(
            Charge,
            (Charge.task_id == i.task_id)
            & (Charge.attempt == i.attempt)
            & (Charge.interval_index == i.interval_index),
        )
        .where(i.created_at >= since, i.interval_index >= 0)
    )
    if scope is not None:
        q = scope.where(q)
    return [
        Interim(at, tenant, owner, pool, model, cards, cores, pflops or ZERO, amount or ZERO)
        for at, tenant, owner, pool, model, cards, cores, pflops, amount in s.execute(q)
    ]


def billed_by_intervals(
    s: Session, attempts: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], tuple[Decimal, Decimal, Decimal]]:
    """Card-, core- and PFLOPS-hours the intervals of these attempts billed, whenever."""
    wanted = set(attempts)
    out: dict[tuple[str, int], tuple[Decimal, Decimal, Decimal]] = {}
    if not wanted:
        return out
    i = InterimUsage
    q = select(i.task_id, i.attempt, i.card_hours, i.cpu_core_hours, i.pflops_hours_fp16).where(
        i.task_id.in_({tid for tid, _a in wanted}), i.interval_index >= 0
    )
    for tid, attempt, cards, cores, pflops in s.execute(q):
        if (tid, attempt) in wanted:
            a, b, c = out.get((tid, attempt), (ZERO, ZERO, ZERO))
            out[(tid, attempt)] = (a + cards, b + cores, c + (pflops or ZERO))
    return out
