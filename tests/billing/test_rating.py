"""Rating is exact and picks the price in force: pure functions, hand-checked cases."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from computenet.billing.rating import (
    Metered,
    Price,
    Tier,
    Unit,
    amount,
    check_price,
    pick_price,
    quantity,
    units_for,
)
from computenet.billing.statements import build, check_period
from computenet.errors import InvalidInput

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 6, 1, tzinfo=UTC)
POOL = "cn.31/acme/a100"


def _p(
    scope: str,
    price: str,
    at: datetime = T0,
    unit: Unit = Unit.CARD_HOUR,
    tier: Tier = Tier.ON_DEMAND,
) -> Price:
    return Price(scope, tier, unit, Decimal(price), "CNY", at)


def test_amount_is_exact_to_the_last_digit() -> None:
    qty, price = Decimal("1234.567891234"), Decimal("0.371234")
    got = amount(qty, price)
    # Integer arithmetic, independent of Decimal contexts: 9 + 6 decimal places.
    assert got == Decimal(1234567891234 * 371234).scaleb(-15)
    assert got == Decimal("458.313576534362756")
    assert amount(Decimal("0.000000001"), Decimal("0.000001")) == Decimal("1E-15")


def test_the_most_specific_then_latest_price_wins() -> None:
    book = [_p("*", "9"), _p("cn.31/acme", "7"), _p(POOL, "5"), _p(POOL, "4", at=T1)]
    before, after = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
    assert pick_price(book, POOL, Tier.ON_DEMAND, [Unit.CARD_HOUR], before).price == 5
    assert pick_price(book, POOL, Tier.ON_DEMAND, [Unit.CARD_HOUR], after).price == 4
    other = "cn.31/acme/h100"
    assert pick_price(book, other, Tier.ON_DEMAND, [Unit.CARD_HOUR], after).price == 7
    assert pick_price(book, "cn.44/zeta/x", Tier.ON_DEMAND, [Unit.CARD_HOUR], after).price == 9
    # "cn.31/acme" must not match a provider that merely starts with the same letters.
    assert (
        pick_price(
            [_p("cn.31/acme", "7")], "cn.31/acmex/p", Tier.ON_DEMAND, [Unit.CARD_HOUR], after
        )
        is None
    )
    assert pick_price(book, POOL, Tier.SPOT, [Unit.CARD_HOUR], after) is None
    assert (
        pick_price(book, POOL, Tier.ON_DEMAND, [Unit.CARD_HOUR], datetime(2025, 1, 1, tzinfo=UTC))
        is None
    )


def test_units_and_quantities() -> None:
    m = Metered(Decimal("2.5"), Decimal("40"), Decimal("0.77"))
    assert units_for(0) == (Unit.CORE_HOUR,)
    assert units_for(8) == (Unit.CARD_HOUR, Unit.PFLOPS_HOUR)
    assert [quantity(u, m) for u in Unit] == [Decimal("2.5"), Decimal("40"), Decimal("0.77")]
    with pytest.raises(InvalidInput, match="FP16"):
        quantity(Unit.PFLOPS_HOUR, Metered(Decimal(1), Decimal(1), None))
    book = [_p("*", "100", unit=Unit.PFLOPS_HOUR)]
    assert pick_price(book, POOL, Tier.ON_DEMAND, units_for(8), T1).unit is Unit.PFLOPS_HOUR


@pytest.mark.parametrize("bad", ["-1", "1000000", "0.0000001", "NaN", "Infinity"])
def test_bad_prices_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        check_price(Decimal(bad))


def test_statements_group_and_total_exactly() -> None:
    rows = [
        (POOL, "on_demand", "card_hour", Decimal("5"), "CNY", Decimal("0.1"), Decimal("0.5")),
        (POOL, "on_demand", "card_hour", Decimal("5"), "CNY", Decimal("0.2"), Decimal("1.0")),
        (POOL, "spot", "card_hour", Decimal("2"), "CNY", Decimal("0.3"), Decimal("0.6")),
        ("x/y/z", "on_demand", "core_hour", Decimal("1"), "USD", Decimal("3"), Decimal("3")),
    ]
    st = build("invoice", "acme", "2026-11", rows)
    assert [(ln.pool, ln.tier, ln.attempts, ln.quantity, ln.amount) for ln in st.lines] == [
        (POOL, "on_demand", 2, Decimal("0.3"), Decimal("1.5")),
        (POOL, "spot", 1, Decimal("0.3"), Decimal("0.6")),
        ("x/y/z", "on_demand", 1, Decimal("3"), Decimal("3")),
    ]
    assert st.totals == {"CNY": Decimal("2.1"), "USD": Decimal("3")}
    assert st.as_csv().splitlines()[-2:] == [
        "2026-11,TOTAL,,,,CNY,,,2.1",
        "2026-11,TOTAL,,,,USD,,,3",
    ]
    for bad in ["2026-13", "2026-1", "26-11", "abcd-ef"]:
        with pytest.raises(InvalidInput):
            check_period(bad)
