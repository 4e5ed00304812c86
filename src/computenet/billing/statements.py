"""Invoices for tenants and earnings statements for providers, from the ledger's charges.

A statement groups a period's charges into lines (pool, tier, unit, unit price) and totals
them per currency. Sums are exact ``Decimal``; nothing is rounded.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import select

from computenet.errors import InvalidInput
from computenet.store.db import Database
from computenet.store.tables_billing import Charge

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


@dataclass
class Statement:
    """An invoice (``party`` a tenant) or an earnings statement (``party`` a provider)."""

    kind: str  # "invoice" | "earnings"
    party: str
    period: str
    lines: list[Line] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=dict)  # currency -> amount

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
        for currency, total in sorted(self.totals.items()):
            w.writerow([self.period, "TOTAL", "", "", "", currency, "", "", total])
        return out.getvalue()


Row = tuple[str, str, str, Decimal, str, Decimal, Decimal]


def build(kind: str, party: str, period: str, rows: Iterable[Row]) -> Statement:
    """Group charge rows ``(pool, tier, unit, unit_price, currency, quantity, amount)``."""
    lines: dict[tuple[str, str, str, Decimal, str], Line] = {}
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for pool, tier, unit, price, currency, qty, amt in rows:
        key = (pool, tier, unit, price, currency)
        line = lines.get(key)
        if line is None:
            line = lines[key] = Line(pool, tier, unit, price, currency)
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
)


def invoice(db: Database, tenant: str, period: str) -> Statement:
    """What ``tenant`` owes for ``period``."""
    q = select(*_COLUMNS).where(Charge.tenant == tenant, Charge.period == check_period(period))
    with db.read() as s:
        return build("invoice", tenant, period, s.execute(q))


def earnings(db: Database, provider: str, period: str) -> Statement:
    """What ``provider`` earned in ``period`` from work on its pools."""
    q = select(*_COLUMNS).where(
        Charge.provider_prefix == provider, Charge.period == check_period(period)
    )
    with db.read() as s:
        return build("earnings", provider, period, s.execute(q))
