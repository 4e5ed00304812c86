"""Rating: what a measured attempt costs. Pure functions, exact ``Decimal`` arithmetic.

A charge is ``quantity x unit price`` with no rounding at all: quantities carry 9 decimal
places (``model.usage``) and prices at most 6, so every product fits the 15 places the
ledger stores, and a charge always equals its price times its usage to the last digit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal
from enum import StrEnum

from computenet.errors import InvalidInput

# Wide enough that no product of a stored price and a stored quantity is ever rounded.
_EXACT = Context(prec=60)
DEFAULT_CURRENCY = "CNY"


class Tier(StrEnum):
    """How the capacity was sold."""

    ON_DEMAND = "on_demand"
    SPOT = "spot"  # cheaper, and preempted when on-demand work needs the cards
    RESERVED = "reserved"


class Unit(StrEnum):
    """What a price is per."""

    CARD_HOUR = "card_hour"
    CORE_HOUR = "core_hour"
    PFLOPS_HOUR = "pflops_hour"  # dense FP16 PFLOPS-hours: the normalized unit


@dataclass(frozen=True)
class Price:
    """One price book entry (``scope``: pool CPI, provider prefix or ``*``)."""

    scope: str
    tier: Tier
    unit: Unit
    price: Decimal
    currency: str
    effective_from: datetime
    entry_id: int | None = None  # None: the pool's own declared offer


@dataclass(frozen=True)
class Metered:
    """The quantities of one attempt's usage record that can be priced."""

    card_hours: Decimal
    cpu_core_hours: Decimal
    pflops_hours_fp16: Decimal | None


def check_price(value: Decimal) -> Decimal:
    """A price: finite, not negative, at most 6 decimal places and under a million."""
    if not value.is_finite() or value < 0 or value >= 1_000_000:
        raise InvalidInput(f"a price must be between 0 and 1000000, got {value}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        raise InvalidInput(f"a price has at most 6 decimal places, got {value}")
    return value


def _specificity(scope: str, pool_cpi: str) -> int:
    if scope == pool_cpi:
        return 2
    if scope != "*" and pool_cpi.startswith(scope + "/"):
        return 1
    return 0 if scope == "*" else -1


def pick_price(
    entries: Iterable[Price], pool_cpi: str, tier: Tier, units: Iterable[Unit], at: datetime
) -> Price | None:
    """The price in force at ``at`` for ``pool_cpi`` and ``tier``, in the first of ``units``
    that has one: the most specific scope wins, then the latest ``effective_from``."""
    candidates = [
        e
        for e in entries
        if e.tier is tier and e.effective_from <= at and _specificity(e.scope, pool_cpi) >= 0
    ]
    for unit in units:
        found = [e for e in candidates if e.unit is unit]
        if found:
            return max(found, key=lambda e: (_specificity(e.scope, pool_cpi), e.effective_from))
    return None


def quantity(unit: Unit, m: Metered) -> Decimal:
    """How many ``unit``s an attempt used."""
    if unit is Unit.CARD_HOUR:
        return m.card_hours
    if unit is Unit.CORE_HOUR:
        return m.cpu_core_hours
    if m.pflops_hours_fp16 is None:
        raise InvalidInput("no FP16 figure is known for this accelerator: cannot bill PFLOPS-hours")
    return m.pflops_hours_fp16


def amount(qty: Decimal, price: Decimal) -> Decimal:
    """``qty x price``, exactly."""
    return _EXACT.multiply(qty, price)


def units_for(cards: int) -> tuple[Unit, ...]:
    """Which units may price an attempt, in order: card work by the card (or normalized
    unit), CPU work by the core."""
    return (Unit.CARD_HOUR, Unit.PFLOPS_HOUR) if cards > 0 else (Unit.CORE_HOUR,)
