"""Invoices for tenants and earnings statements for providers, from the ledger's charges.

A statement groups a period's charges into lines (pool, tier, unit, unit price) and totals
them per currency. Sums are exact ``Decimal``; nothing is rounded. A running service
replica's interim charges (``billing.metering``) are lines like any other, so the bill shows
its card-hours to date; an invoice also counts the requests each service served in the period
(not priced: requests are free, the replicas' time is what is billed).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from computenet.errors import InvalidInput
from computenet.store.db import Database
from computenet.store.tables_billing import Charge, InterimUsage

_PERIOD_LEN = 7


def check_period(period: str) -> str:
    """``YYYY-MM``, a calendar month."""
    year, _, month = period.partition("-")
    if len(period) != _PERIOD_LEN or not (year.isdigit() and month.isdigit()):
        raise InvalidInput(f"a period is a month, YYYY-MM, not {period!r}")
    if not 1 <= int(month) <= 12:
        raise InvalidInput(f"no month {month} in {period!r}")
    return period


@dataclass
class Line:
    """All charges of one kind in a statement."""

    pool: str
    tier: str
    unit: str
    unit_price: Decimal
    currency: str
    attempts: int = 0
    quantity: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    seen: set[tuple[object, ...]] = field(default_factory=set, repr=False, compare=False)


@dataclass
class Statement:
    """An invoice (``party`` a tenant) or an earnings statement (``party`` a provider)."""

    kind: str  # "invoice" | "earnings"
    party: str
    period: str
    lines: list[Line] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=dict)  # currency -> amount
    requests: dict[str, int] = field(default_factory=dict)  # service -> requests served

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: amounts as strings, so no digit is lost on the way."""
        return {
            "kind": self.kind,
            "party": self.party,
            "period": self.period,
            "lines": [
                {
                    "pool": ln.pool,
                    "tier": ln.tier,
                    "unit": ln.unit,
                    "unit_price": str(ln.unit_price),
                    "currency": ln.currency,
                    "attempts": ln.attempts,
                    "quantity": str(ln.quantity),
                    "amount": str(ln.amount),
                }
                for ln in self.lines
            ],
            "totals": {c: str(a) for c, a in sorted(self.totals.items())},
            "requests": [
                {"service": name, "requests": n, "amount": "0"}
                for name, n in sorted(self.requests.items())
            ],
        }

    def as_csv(self) -> str:
        """One row per line, then one total row per currency."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(
            [
                "period",
                "pool",
                "tier",
                "unit",
                "unit_price",
                "currency",
                "attempts",
                "quantity",
                "amount",
            ]
        )
        for ln in self.lines:
            w.writerow(
                [
                    self.period,
                    ln.pool,
                    ln.tier,
                    ln.unit,
                    ln.unit_price,
                    ln.currency,
                    ln.attempts,
                    ln.quantity,
                    ln.amount,
                ]
            )
        for name, n in sorted(self.requests.items()):
            w.writerow([self.period, f"service:{name}", "", "request", 0, "", "", n, 0])
        for currency, total in sorted(self.totals.items()):
            w.writerow([self.period, "TOTAL", "", "", "", currency, "", "", total])
        return out.getvalue()


Row = tuple[Any, ...]


def build(kind: str, party: str, period: str, rows: Iterable[Row]) -> Statement:
    """Group charge rows ``(pool, tier, unit, unit_price, currency, quantity, amount)``,
    optionally followed by ``(task id, attempt)``: then a line counts each attempt once
    however many interim charges it has; without, each row is an attempt."""
    lines: dict[tuple[str, str, str, Decimal, str], Line] = {}
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for n, (pool, tier, unit, price, currency, qty, amt, *attempt) in enumerate(rows):
        key = (pool, tier, unit, price, currency)
        line = lines.get(key)
        if line is None:
            line = lines[key] = Line(pool, tier, unit, price, currency)
        seen = tuple(attempt) if attempt else (n,)
        if seen not in line.seen:
            line.seen.add(seen)
            line.attempts += 1
        line.quantity += qty
        line.amount += amt
        totals[currency] += amt
    ordered = sorted(lines.values(), key=lambda x: (x.pool, x.tier, x.unit, x.unit_price))
    return Statement(kind, party, period, ordered, dict(totals))


_COLUMNS = (
    Charge.pool_cpi,
    Charge.tier,
    Charge.unit,
    Charge.unit_price,
    Charge.currency,
    Charge.quantity,
    Charge.amount,
    Charge.task_id,
    Charge.attempt,
)


def invoice(db: Database, tenant: str, period: str) -> Statement:
    """What ``tenant`` owes for ``period``, and the requests its services served."""
    q = select(*_COLUMNS).where(Charge.tenant == tenant, Charge.period == check_period(period))
    served = (
        select(InterimUsage.service, func.sum(InterimUsage.requests))
        .where(InterimUsage.tenant == tenant, InterimUsage.period == period)
        .group_by(InterimUsage.service)
    )
    with db.read() as s:
        st = build("invoice", tenant, period, s.execute(q))
        st.requests = {name: int(n) for name, n in s.execute(served) if n}
    return st


def earnings(db: Database, provider: str, period: str) -> Statement:
    """What ``provider`` earned in ``period`` from work on its pools."""
    q = select(*_COLUMNS).where(
        Charge.provider_prefix == provider, Charge.period == check_period(period)
    )
    with db.read() as s:
        return build("earnings", provider, period, s.execute(q))
