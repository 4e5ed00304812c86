"""Settlement between nodes for forwarded work.

When node X forwards a task to node Y, Y runs it for the tenant ``federation:X`` and charges
it at its own prices; the usage record Y signs carries that charge, and X books the same
amount for the user who submitted it (it is what the work cost). So for a month:

- what X owes Y: X's charges on Y's pools (CPIs ``Y/...``);
- what Y is owed by X: Y's charges to the tenant ``federation:X``.

Each node states both directions from its own records; the two statements must agree line by
line (task, attempt, amount) and net to zero. :func:`reconcile` reports every difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from computenet.billing.ledger import Rate, book_charge
from computenet.billing.rating import Tier, Unit, amount
from computenet.billing.statements import check_period
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_billing import FINAL, Charge, InterimUsage

FEDERATION_TENANT = "federation:"
Line = tuple[str, int, str, str]  # task id, attempt, currency, amount (exact, as text)


def _as_text(r: Charge) -> dict[str, str]:
    return {
        "tier": r.tier,
        "unit": r.unit,
        "quantity": str(r.quantity),
        "unit_price": str(r.unit_price),
        "amount": str(r.amount),
        "currency": r.currency,
    }


def charges_of(db: Database, task_id: str) -> dict[int, dict[str, str]]:
    """Attempt -> the closing charge this node made for it, as plain strings (to sign and
    send). Where interim charges came first, ``net_of_interim`` says what they billed: the
    closing quantity is the attempt's usage less that, and may be negative (a correction,
    when the gateway measured less time than the intervals the node saw elapse)."""
    out: dict[int, dict[str, str]] = {}
    interim: dict[int, Decimal] = defaultdict(Decimal)
    with db.read() as s:
        for r in s.scalars(select(Charge).where(Charge.task_id == task_id)):
            if r.interval_index == FINAL:
                out[r.attempt] = _as_text(r)
            else:
                interim[r.attempt] += r.quantity
    for attempt, qty in interim.items():
        if attempt in out:
            out[attempt]["net_of_interim"] = str(qty)
    return out


def interim_of(db: Database, task_id: str, newest: int | None = None) -> list[dict[str, Any]]:
    """A running replica's interim usage rows here (the ``newest`` written, or all), each
    with its charge, as plain values (to sign and send to the node that forwarded it)."""
    with db.read() as s:
        charges = {
            (r.attempt, r.interval_index): _as_text(r)
            for r in s.scalars(
                select(Charge).where(Charge.task_id == task_id, Charge.interval_index != FINAL)
            )
        }
        q = (
            select(InterimUsage)
            .where(InterimUsage.task_id == task_id)
            .order_by(InterimUsage.id.desc())
        )
        if newest is not None:
            q = q.limit(newest)
        out = []
        for u in reversed(list(s.scalars(q))):
            rec: dict[str, Any] = {
                "task_id": u.task_id,
                "attempt": u.attempt,
                "interval_index": u.interval_index,
                "service": u.service,
                "pool": u.pool_cpi,
                "accelerator_model": u.accelerator_model,
                "cards": u.cards,
                "wall_s": str(u.wall_s),
                "card_hours": str(u.card_hours),
                "cpu_core_hours": str(u.cpu_core_hours),
                "pflops_hours_fp16": (
                    str(u.pflops_hours_fp16) if u.pflops_hours_fp16 is not None else None
                ),
                "requests": u.requests,
            }
            charge = charges.get((u.attempt, u.interval_index))
            if charge is not None:
                rec["charge"] = charge
            out.append(rec)
        return out


def consistent(charge: Any) -> bool:
    """A charge received from another node adds up: amount = quantity x unit price, and the
    quantity is not negative (a closing charge may be, down to minus what its interim
    charges billed)."""
    try:
        qty, price = Decimal(charge["quantity"]), Decimal(charge["unit_price"])
        stated = Decimal(charge["amount"])
        floor = -Decimal(charge.get("net_of_interim", "0"))
        Tier(charge["tier"]), Unit(charge["unit"])
    except (KeyError, TypeError, ValueError, InvalidOperation):
        return False
    return qty >= min(floor, Decimal(0)) and price >= 0 and amount(qty, price) == stated


def book_remote(
    s: Session,
    task: t.Task,
    usage: t.UsageRecord | InterimUsage,
    charge: dict[str, str],
    now: datetime,
    interval_index: int = FINAL,
) -> Charge:
    """Book, for the submitting user, the charge the node that ran the task made (for an
    attempt, or for one interval of a running replica)."""
    provider = "/".join(usage.pool_cpi.split("/")[:2])
    rate = Rate(
        provider,
        Tier(charge["tier"]),
        Unit(charge["unit"]),
        Decimal(charge["unit_price"]),
        charge["currency"],
        None,
    )
    return book_charge(s, task, usage, rate, Decimal(charge["quantity"]), now, interval_index)


@dataclass
class Settlement:
    """One node's statement of what it and a peer owe each other for a month."""

    node: str
    peer: str
    period: str
    owed_to_peer: list[Line] = field(default_factory=list)  # work the peer ran for us
    owed_by_peer: list[Line] = field(default_factory=list)  # work we ran for the peer

    def totals(self, lines: list[Line]) -> dict[str, Decimal]:
        """Sum per currency."""
        out: dict[str, Decimal] = defaultdict(Decimal)
        for _tid, _attempt, currency, amt in lines:
            out[currency] += Decimal(amt)
        return dict(out)

    def net(self) -> dict[str, Decimal]:
        """What the peer owes us, less what we owe it, per currency."""
        out: dict[str, Decimal] = defaultdict(Decimal, self.totals(self.owed_by_peer))
        for currency, amt in self.totals(self.owed_to_peer).items():
            out[currency] -= amt
        return dict(out)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, amounts as strings."""
        return {
            "node": self.node,
            "peer": self.peer,
            "period": self.period,
            "owed_to_peer": [list(x) for x in self.owed_to_peer],
            "owed_by_peer": [list(x) for x in self.owed_by_peer],
            "totals": {
                "owed_to_peer": {k: str(v) for k, v in self.totals(self.owed_to_peer).items()},
                "owed_by_peer": {k: str(v) for k, v in self.totals(self.owed_by_peer).items()},
                "net": {k: str(v) for k, v in self.net().items()},
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settlement:
        """Back from :meth:`as_dict` (a peer's answer)."""

        def lines(key: str) -> list[Line]:
            return [(str(a), int(b), str(c), str(d)) for a, b, c, d in data.get(key, [])]

        return cls(
            str(data["node"]),
            str(data["peer"]),
            str(data["period"]),
            lines("owed_to_peer"),
            lines("owed_by_peer"),
        )


def settlement(db: Database, node: str, peer: str, period: str) -> Settlement:
    """This node's statement with ``peer`` for ``period``, from its own charges."""
    check_period(period)
    cols = (Charge.task_id, Charge.attempt, Charge.currency, Charge.amount)
    with db.read() as s:
        ours = s.execute(
            select(*cols, Charge.pool_cpi)
            .where(Charge.period == period, Charge.pool_cpi.startswith(f"{peer}/"))
            .order_by(Charge.task_id, Charge.attempt)
        )
        owed_to = _per_attempt((tid, att, cur, amt) for tid, att, cur, amt, _pool in ours)
        theirs = s.execute(
            select(*cols)
            .where(Charge.period == period, Charge.tenant == f"{FEDERATION_TENANT}{peer}")
            .order_by(Charge.task_id, Charge.attempt)
        )
        owed_by = _per_attempt(theirs)
    return Settlement(node, peer, period, owed_to, owed_by)


def _per_attempt(rows: Iterable[tuple[str, int, str, Decimal]]) -> list[Line]:
    """One line per attempt and currency: a replica's interim charges and its closing
    charge are summed, so both nodes' lines compare whatever rows each has."""
    sums: dict[tuple[str, int, str], Decimal] = defaultdict(Decimal)
    for tid, att, cur, amt in rows:
        sums[(tid, att, cur)] += amt
    return [(tid, att, cur, str(amt)) for (tid, att, cur), amt in sorted(sums.items())]


def reconcile(mine: Settlement, theirs: Settlement) -> list[str]:
    """Every difference between two nodes' statements of the same month; empty if they agree."""
    problems = []
    for label, ours, their in (
        ("we owe them", mine.owed_to_peer, theirs.owed_by_peer),
        ("they owe us", mine.owed_by_peer, theirs.owed_to_peer),
    ):
        a = {(tid, att): (cur, Decimal(amt)) for tid, att, cur, amt in ours}
        b = {(tid, att): (cur, Decimal(amt)) for tid, att, cur, amt in their}
        for key in sorted(a.keys() | b.keys()):
            if key not in b:
                problems.append(f"{label}: {key[0]} attempt {key[1]} only in our records")
            elif key not in a:
                problems.append(f"{label}: {key[0]} attempt {key[1]} only in theirs")
            elif a[key] != b[key]:
                problems.append(
                    f"{label}: {key[0]} attempt {key[1]}: we say {a[key][1]} {a[key][0]}, "
                    f"they say {b[key][1]} {b[key][0]}"
                )
    return problems
