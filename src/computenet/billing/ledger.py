"""The ledger: price books, one charge per usage record, tenants' budgets.

Charges are written in the same transaction as the usage record they price (the dispatcher
calls ``charge``), so there is never a usage record without its charge or the reverse, and
the unique (task, attempt) key means a re-sent report is never charged twice. Prices are
looked up as they stood when the attempt started, so a price change never rewrites history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from computenet.billing.rating import (
    DEFAULT_CURRENCY,
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
from computenet.errors import BudgetExceeded, InvalidInput
from computenet.model.pool import PoolSpec
from computenet.model.task import TaskSpec
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_billing import (
    FINAL,
    Budget,
    Charge,
    InterimUsage,
    PriceEntry,
    Reservation,
)
from computenet.tasks.lifecycle import LIVE_STATES

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ACTIVE = LIVE_STATES
_SECONDS_PER_HOUR = Decimal(3600)
_MICRO = Decimal("0.000001")
# Which tenants have a budget is re-read at most this often (a budget set through another
# replica is enforced here within it; this replica's own changes apply at once).
BUDGETS_TTL_S = 5.0


def period_of(at: datetime) -> str:
    """The billing period (calendar month, UTC) a moment falls in: ``YYYY-MM``."""
    return at.astimezone(UTC).strftime("%Y-%m")


def tier_of(spec: TaskSpec) -> Tier:
    """Preemptible work is sold as spot, everything else on demand."""
    return Tier.SPOT if spec.resources.preemptible else Tier.ON_DEMAND


@dataclass(frozen=True)
class Rate:
    """How one attempt is priced."""

    provider_prefix: str
    tier: Tier
    unit: Unit
    unit_price: Decimal
    currency: str
    price_entry_id: int | None


@dataclass(frozen=True)
class BudgetStatus:
    """Where a tenant stands this month."""

    tenant: str
    currency: str
    monthly_limit: Decimal
    period: str
    spent: Decimal
    held: Decimal  # the most unfinished tasks and uncharged reservations may still cost
    warn_fraction: Decimal

    @property
    def left(self) -> Decimal:
        """What may still be committed."""
        return self.monthly_limit - self.spent - self.held

    @property
    def warning(self) -> bool:
        """Spent (and held) past the warning threshold."""
        return self.spent + self.held >= self.monthly_limit * self.warn_fraction


def _declared(pool: t.Pool) -> list[Price]:
    """A pool's own offer, as price book entries in force since the beginning."""
    spec = PoolSpec.model_validate(pool.spec)
    return [
        Price(
            pool.cpi,
            Tier.ON_DEMAND,
            Unit.CARD_HOUR,
            spec.price_per_card_hour,
            DEFAULT_CURRENCY,
            _EPOCH,
        ),
        Price(
            pool.cpi,
            Tier.ON_DEMAND,
            Unit.CORE_HOUR,
            spec.price_per_core_hour,
            DEFAULT_CURRENCY,
            _EPOCH,
        ),
    ]


def _price(e: PriceEntry) -> Price:
    return Price(e.scope, Tier(e.tier), Unit(e.unit), e.price, e.currency, e.effective_from, e.id)


def book_charge(
    s: Session,
    task: t.Task,
    usage: t.UsageRecord | InterimUsage,
    rate: Rate,
    qty: Decimal,
    now: datetime,
    interval_index: int = FINAL,
) -> Charge:
    """Write the charge of one usage record, or of one interval of a running replica
    (``qty x unit_price``, exact), and count it against its tenant's budget, inside the
    caller's transaction."""
    tenant = task.tenant or task.owner
    row = Charge(
        task_id=task.id,
        attempt=usage.attempt,
        interval_index=interval_index,
        tenant=tenant,
        owner=task.owner,
        pool_cpi=usage.pool_cpi,
        provider_prefix=rate.provider_prefix,
        tier=rate.tier.value,
        unit=rate.unit.value,
        quantity=qty,
        unit_price=rate.unit_price,
        price_entry_id=rate.price_entry_id,
        amount=amount(qty, rate.unit_price),
        currency=rate.currency,
        period=period_of(now),
        created_at=now,
    )
    return add_charge(s, row)


def add_charge(s: Session, row: Charge) -> Charge:
    """Write a charge and count it against its tenant's budget, in the caller's transaction."""
    s.add(row)
    budget = s.get(Budget, row.tenant, with_for_update=True)
    if budget is not None:
        if budget.period != row.period:
            budget.period, budget.spent = row.period, Decimal(0)
        budget.spent = amount(Decimal(1), budget.spent + row.amount)
    return row


class Ledger:
    """Prices, charges and budgets in the node's store."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._budgeted: tuple[float, frozenset[str]] | None = None

    # ---- price books --------------------------------------------------------------

    def add_price(
        self,
        scope: str,
        tier: Tier,
        unit: Unit,
        price: Decimal,
        currency: str = DEFAULT_CURRENCY,
        effective_from: datetime | None = None,
    ) -> PriceEntry:
        """Add a price from ``effective_from`` (default now) on; earlier charges keep theirs."""
        check_price(price)
        now = datetime.now(UTC)
        row = PriceEntry(
            scope=scope,
            tier=tier.value,
            unit=unit.value,
            currency=currency,
            price=price,
            effective_from=effective_from or now,
            created_at=now,
        )
        with self.db.write() as s:
            s.add(row)
        return row

    def price_book(self) -> list[PriceEntry]:
        """Every price entry, oldest first."""
        with self.db.read() as s:
            return list(s.scalars(select(PriceEntry).order_by(PriceEntry.id)))

    @staticmethod
    def price_of(
        s: Session, pool: t.Pool, tier: Tier, units: tuple[Unit, ...], at: datetime
    ) -> Price:
        """The price in force at ``at`` for work of ``tier`` on ``pool``.

        The price book wins (most specific scope, then latest entry); the pool's own
        declared offer applies where the book has nothing. Spot work without a spot price
        pays the on-demand price.
        """
        scopes = {"*", pool.cpi, pool.provider_prefix}
        book = [
            _price(e) for e in s.scalars(select(PriceEntry).where(PriceEntry.scope.in_(scopes)))
        ]
        for tier_ in (tier, Tier.ON_DEMAND):
            for entries in (book, _declared(pool)):
                found = pick_price(entries, pool.cpi, tier_, units, at)
                if found is not None:
                    return found
        raise AssertionError("a pool's declared offer prices card and core hours on demand")

    # ---- charging -----------------------------------------------------------------

    def rate(self, s: Session, task: t.Task, pool_cpi: str, cards: int) -> Rate:
        """How an attempt of ``task`` on ``pool_cpi`` is priced: the same for its interim
        charges and its closing one (the price in force when the attempt started)."""
        pool = s.get(t.Pool, pool_cpi)
        if pool is None:
            raise InvalidInput(f"pool {pool_cpi} is unknown: cannot price its usage")
        if task.reservation_id is not None and cards > 0:
            covered = s.get(Reservation, task.reservation_id)
            if covered is not None and covered.pool_cpi == pool_cpi:
                # The reservation pays for these cards over its window (and the scheduler
                # only puts work on it that ends inside the window).
                return Rate(
                    pool.provider_prefix,
                    Tier.RESERVED,
                    Unit.CARD_HOUR,
                    Decimal(0),
                    covered.currency,
                    None,
                )
        tier = tier_of(TaskSpec.model_validate(task.spec))
        started = task.started_at or task.created_at
        price = self.price_of(s, pool, tier, units_for(cards), started)
        return Rate(
            pool.provider_prefix, tier, price.unit, price.price, price.currency, price.entry_id
        )

    def charge(self, s: Session, task: t.Task, usage: t.UsageRecord, now: datetime) -> Charge:
        """Price one usage record inside the caller's transaction; returns the charge.

        What the attempt's interim charges already billed (a running replica's) is left
        out, so the interim charges and this one add up to the attempt's usage exactly.
        The caller holds the task's row locked (read ``with_for_update``), as the metering
        round does before it adds an interval: the two never both bill the same seconds.
        """
        rate, qty = self._priced(s, task, usage)
        if isinstance(task.spec, dict) and task.spec.get("service"):  # only replicas accrue
            qty -= self.interim_quantity(s, task.id, usage.attempt)
        return book_charge(s, task, usage, rate, qty, now)

    def charge_interim(
        self, s: Session, task: t.Task, usage: InterimUsage, now: datetime
    ) -> Charge:
        """Price one elapsed interval of a running replica, in the caller's transaction."""
        rate, qty = self._priced(s, task, usage)
        return book_charge(s, task, usage, rate, qty, now, usage.interval_index)

    def _priced(
        self, s: Session, task: t.Task, usage: t.UsageRecord | InterimUsage
    ) -> tuple[Rate, Decimal]:
        """The rate of an attempt and the quantity of ``usage`` in its unit."""
        rate = self.rate(s, task, usage.pool_cpi, usage.cards)
        metered = Metered(usage.card_hours, usage.cpu_core_hours, usage.pflops_hours_fp16)
        return rate, quantity(rate.unit, metered)

    @staticmethod
    def interim_quantity(s: Session, task_id: str, attempt: int) -> Decimal:
        """What an attempt's interim charges billed so far, in their unit."""
        rows = s.scalars(
            select(Charge.quantity).where(
                Charge.task_id == task_id,
                Charge.attempt == attempt,
                Charge.interval_index != FINAL,
            )
        )
        return sum(rows, Decimal(0))

    # ---- budgets ------------------------------------------------------------------

    def set_budget(
        self,
        tenant: str,
        monthly_limit: Decimal,
        currency: str = DEFAULT_CURRENCY,
        warn_fraction: Decimal = Decimal("0.8"),
    ) -> BudgetStatus:
        """Set (or change) a tenant's monthly limit; what it spent this month stands."""
        check_price(monthly_limit)
        if not Decimal(0) < warn_fraction <= 1:
            raise InvalidInput(f"warn_fraction must be in (0, 1], got {warn_fraction}")
        now = datetime.now(UTC)
        with self.db.write() as s:
            row = s.get(Budget, tenant, with_for_update=True)
            if row is None:
                spent = self._spent(s, tenant, period_of(now))
                row = Budget(tenant=tenant, period=period_of(now), spent=spent)
                s.add(row)
            row.currency, row.monthly_limit = currency, monthly_limit
            row.warn_fraction, row.updated_at = warn_fraction, now
        self._budgeted = None
        return self.budget(tenant)

    def budget(self, tenant: str) -> BudgetStatus:
        """A tenant's budget and where it stands (``InvalidInput`` if it has none)."""
        with self.db.read() as s:
            status = self.status_in(s, tenant, datetime.now(UTC))
        if status is None:
            raise InvalidInput(f"tenant {tenant!r} has no budget")
        return status

    def status_in(
        self, s: Session, tenant: str, now: datetime, lock: bool = False
    ) -> BudgetStatus | None:
        # Locked at submit, so that two submissions cannot both fit in what is left.
        row = s.get(Budget, tenant, with_for_update=lock)
        if row is None:
            return None
        period = period_of(now)
        spent = row.spent if row.period == period else Decimal(0)
        holding = (
            t.Task.tenant == tenant,
            t.Task.state.in_(_ACTIVE),
            t.Task.max_charge.is_not(None),
        )
        held_rows: dict[str, Decimal | None] = {
            tid: most
            for tid, most in s.execute(select(t.Task.id, t.Task.max_charge).where(*holding))
        }
        # A running replica's interim charges are spent already: they no longer count as held.
        billed: dict[str, Decimal] = {}
        for tid, amt in s.execute(
            select(Charge.task_id, Charge.amount).where(
                Charge.tenant == tenant,
                Charge.interval_index != FINAL,
                Charge.task_id.in_(select(t.Task.id).where(*holding)),
            )
        ):
            billed[tid] = billed.get(tid, Decimal(0)) + amt
        held = sum(
            (max(Decimal(0), h - billed.get(tid, Decimal(0))) for tid, h in held_rows.items() if h),
            Decimal(0),
        )
        held += sum(
            s.scalars(
                select(Reservation.max_charge).where(
                    Reservation.tenant == tenant, Reservation.state == "booked"
                )
            ),
            Decimal(0),
        )
        return BudgetStatus(
            tenant, row.currency, row.monthly_limit, period, spent, held, row.warn_fraction
        )

    @staticmethod
    def _spent(s: Session, tenant: str, period: str) -> Decimal:
        amounts = s.scalars(
            select(Charge.amount).where(Charge.tenant == tenant, Charge.period == period)
        )
        return sum(amounts, Decimal(0))

    def hold(self, s: Session, spec: TaskSpec, tenant: str, now: datetime) -> Decimal | None:
        """At submit: the most this task can cost, refused if that breaks the tenant's budget.

        Returns ``None`` when the tenant has no budget. The bound is the time limit times the
        cards (or cores) times the price cap, or, without a cap, the highest price any pool
        asks now. Held amounts are released when the task ends; the real charge replaces them.
        """
        if not self.has_budget(s, tenant):
            return None  # most tenants: no locked read on every submission
        status = self.status_in(s, tenant, now, lock=True)
        if status is None:
            return None
        limit_s = spec.resources.time_limit_s
        if limit_s is None:
            raise InvalidInput(
                f"tenant {tenant!r} has a budget: set resources.time_limit_s so that the "
                "task's cost is bounded"
            )
        acc = spec.resources.accelerator
        count = acc.count if acc is not None else spec.resources.cpu_cores
        unit = Unit.CARD_HOUR if acc is not None else Unit.CORE_HOUR
        cap = spec.placement.max_price_per_card_hour if acc is not None else None
        price = cap if cap is not None else self._highest_price(s, unit, tier_of(spec), now)
        # Rounded up to the micro-unit: a hold may only err on the side of the budget.
        most = amount(Decimal(limit_s) * count, price) / _SECONDS_PER_HOUR
        most = most.quantize(_MICRO, rounding=ROUND_CEILING)
        if most > status.left:
            raise BudgetExceeded(
                f"budget exceeded: tenant {tenant!r} has spent {status.spent} "
                f"{status.currency} of {status.monthly_limit} in {status.period}, "
                f"{status.held} is held by unfinished tasks, so {status.left} is left; this "
                f"task may cost up to {most:.6f} ({count} x {limit_s} s at {price}/"
                f"{unit.value.replace('_', '-')})"
            )
        return most

    def has_budget(self, s: Session, tenant: str) -> bool:
        """Whether ``tenant`` has a budget, from a list re-read every ``BUDGETS_TTL_S``."""
        now = time.monotonic()
        if self._budgeted is None or now - self._budgeted[0] >= BUDGETS_TTL_S:
            self._budgeted = (now, frozenset(s.scalars(select(Budget.tenant))))
        return tenant in self._budgeted[1]

    def _highest_price(self, s: Session, unit: Unit, tier: Tier, now: datetime) -> Decimal:
        pools = s.scalars(select(t.Pool))
        return max(
            (self.price_of(s, p, tier, (unit,), now).price for p in pools), default=Decimal(0)
        )
