"""Advance reservations: N cards of a model (in a region) for a time window.

A reservation is booked on one of this node's pools that still has the cards over the whole
window, at the pool's reserved price (its on-demand price where it has none), and its cost
is held against the tenant's budget at once. The scheduler honours it
(:mod:`computenet.sched.reservations`); the window is charged when it ends, as one charge
line whose id is the reservation's. Work that runs on the reservation pays nothing more for
its cards. Called off before the window, a reservation costs nothing; part way through, it
ends then and is charged for the time it held the cards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from computenet.billing.ledger import Ledger, add_charge, period_of
from computenet.billing.rating import Price, Tier, Unit, amount
from computenet.errors import BudgetExceeded, Conflict, InvalidInput, NotFound
from computenet.model.ids import ulid
from computenet.model.pool import REGION_CODE, PoolHealth, PoolSpec
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_billing import Charge, Reservation
from computenet.tasks.clock import Clock, utcnow

BOOKED, CHARGED, CANCELLED = "booked", "charged", "cancelled"
MAX_AHEAD = timedelta(days=366)
MAX_WINDOW = timedelta(days=31)
MAX_CARDS = 10_000
PAST_SLACK = timedelta(minutes=5)  # a start this little in the past means "now"
_NINE = Decimal("0.000000001")  # card-hours carry 9 places, like usage records
_LOCK = 0x636E7273  # 'cnrs': bookings on PostgreSQL take it one at a time


@dataclass(frozen=True)
class ReservationRequest:
    """What a tenant asks for: ``cards`` of ``model`` from ``starts_at`` to ``ends_at``,
    optionally within a region (GB/T 2260 prefix) or on one named pool."""

    model: str
    cards: int
    starts_at: datetime
    ends_at: datetime
    region: str | None = None
    pool: str | None = None


def card_hours(cards: int, start: datetime, end: datetime) -> Decimal:
    """Cards x window length in hours, to 9 places (half-even), as usage records are."""
    seconds = Decimal(str((end - start).total_seconds()))
    return (seconds * cards / 3600).quantize(_NINE, rounding=ROUND_HALF_EVEN)


def _fold(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _check(req: ReservationRequest, now: datetime) -> ReservationRequest:
    if req.starts_at.tzinfo is None or req.ends_at.tzinfo is None:
        raise InvalidInput("starts_at and ends_at need a time zone (e.g. 2026-11-21T10:00:00Z)")
    if not 1 <= req.cards <= MAX_CARDS:
        raise InvalidInput(f"cards must be between 1 and {MAX_CARDS}, got {req.cards}")
    if req.region is not None and not REGION_CODE.fullmatch(req.region):
        raise InvalidInput(f"region {req.region!r} must be a GB/T 2260 code of 2, 4 or 6 digits")
    if req.starts_at < now - PAST_SLACK:
        raise InvalidInput(f"the window starts in the past ({req.starts_at.isoformat()})")
    start = max(req.starts_at, now)
    if req.ends_at <= start:
        raise InvalidInput("the window must end after it starts (and after now)")
    if req.ends_at - start > MAX_WINDOW:
        raise InvalidInput(f"a window is at most {MAX_WINDOW.days} days")
    if start > now + MAX_AHEAD:
        raise InvalidInput(f"a window starts at most {MAX_AHEAD.days} days ahead")
    return ReservationRequest(req.model, req.cards, start, req.ends_at, req.region, req.pool)


def peak_reserved(s: Session, pool: str, start: datetime, end: datetime) -> int:
    """The most cards of ``pool`` that booked reservations hold at any moment of the window."""
    rows = s.execute(
        select(Reservation.starts_at, Reservation.ends_at, Reservation.cards).where(
            Reservation.pool_cpi == pool,
            Reservation.state == BOOKED,
            Reservation.starts_at < end,
            Reservation.ends_at > start,
        )
    )
    edges: list[tuple[datetime, int]] = []
    for a, b, cards in rows:
        edges += [(max(a, start), cards), (b, -cards)]
    peak = held = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):  # ends before starts at a tie
        held += delta
        peak = max(peak, held)
    return peak


class Reservations:
    """Book, list, cancel and charge reservations in the node's store."""

    def __init__(self, db: Database, ledger: Ledger, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock
        self.ledger = ledger

    def book(
        self, req: ReservationRequest, owner: str, tenant: str, now: datetime | None = None
    ) -> Reservation:
        """Reserve the cards on the cheapest pool that has them over the whole window.

        Raises ``NotFound`` when no pool can, ``BudgetExceeded`` when the window's cost does
        not fit the tenant's budget (with the numbers)."""
        now = now or self.clock()
        req = _check(req, now)
        with self.db.write() as s:
            if not self.db.is_sqlite:
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
            pool, price = self._choose(s, req)
            qty = card_hours(req.cards, req.starts_at, req.ends_at)
            cost = amount(qty, price.price)
            status = self.ledger.status_in(s, tenant, now, lock=True)
            if status is not None and cost > status.left:
                raise BudgetExceeded(
                    f"budget exceeded: tenant {tenant!r} has {status.left} {status.currency} "
                    f"left in {status.period} ({status.spent} spent, {status.held} held); "
                    f"this reservation costs {cost} ({qty} card-hours at {price.price})"
                )
            spec = PoolSpec.model_validate(pool.spec)
            assert spec.accelerator is not None  # by _choose
            row = Reservation(
                id=f"rsv-{ulid()}",
                tenant=tenant,
                owner=owner,
                pool_cpi=pool.cpi,
                provider_prefix=pool.provider_prefix,
                model=spec.accelerator.model,
                cards=req.cards,
                starts_at=req.starts_at,
                ends_at=req.ends_at,
                state=BOOKED,
                unit_price=price.price,
                price_entry_id=price.entry_id,
                currency=price.currency,
                max_charge=cost,
                created_at=now,
            )
            s.add(row)
        return row

    def _choose(self, s: Session, req: ReservationRequest) -> tuple[t.Pool, Price]:
        want = _fold(req.model)
        q = select(t.Pool).order_by(t.Pool.cpi)
        if req.pool is not None:
            q = q.where(t.Pool.cpi == req.pool)
        matching = checked = 0
        options = []
        for pool in s.scalars(q):
            spec = PoolSpec.model_validate(pool.spec)
            acc = spec.accelerator
            if acc is None or want not in _fold(acc.model):
                continue
            if req.region is not None and not spec.region.within(req.region):
                continue
            matching += 1
            if pool.health == PoolHealth.UNHEALTHY.value:
                continue
            checked += 1
            free = spec.total().accelerators - peak_reserved(
                s, pool.cpi, req.starts_at, req.ends_at
            )
            if free < req.cards:
                continue
            price = self.ledger.price_of(s, pool, Tier.RESERVED, (Unit.CARD_HOUR,), req.starts_at)
            options.append((price.price, -free, pool.cpi, pool, price))
        where = f" in region {req.region}" if req.region else ""
        if not options:
            if not matching:
                raise NotFound(f"no pool here has {req.model} cards{where}")
            raise Conflict(
                f"no pool has {req.cards} x {req.model}{where} free of other reservations over "
                f"the whole window ({matching} matching pools, {checked} healthy)"
            )
        _, _, _, pool, price = min(options, key=lambda o: o[:3])
        return pool, price

    def listing(self, tenant: str | None, pool_prefix: str | None = None) -> list[Reservation]:
        """Reservations, newest first: a tenant's, or all (``None``); only those on pools
        under ``pool_prefix`` when given."""
        with self.db.read() as s:
            q = select(Reservation).order_by(Reservation.created_at.desc())
            if tenant is not None:
                q = q.where(Reservation.tenant == tenant)
            if pool_prefix is not None:
                q = q.where(Reservation.pool_cpi.startswith(pool_prefix, autoescape=True))
            return list(s.scalars(q))

    def get(self, rid: str, tenant: str | None) -> Reservation:
        """One reservation, if the caller (a tenant, or ``None`` for operators) may see it."""
        with self.db.read() as s:
            row = s.get(Reservation, rid)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise NotFound(f"no reservation {rid!r}")
        return row

    def cancel(self, rid: str, tenant: str | None, now: datetime | None = None) -> Reservation:
        """Call a reservation off: free before its window, charged for the time it held the
        cards when under way; ``Conflict`` once it has ended."""
        now = now or self.clock()
        with self.db.write() as s:
            row = s.get(Reservation, rid, with_for_update=True)
            if row is None or (tenant is not None and row.tenant != tenant):
                raise NotFound(f"no reservation {rid!r}")
            if row.state != BOOKED or row.ends_at <= now:
                raise Conflict(f"reservation {rid} has already ended ({row.state})")
            if now < row.starts_at:
                row.state = CANCELLED
            else:
                row.ends_at = now
                self._charge(s, row, now)
        return row

    def settle_due(self, now: datetime | None = None) -> int:
        """Charge every reservation whose window has ended; returns how many."""
        now = now or self.clock()
        with self.db.write() as s:
            due = list(
                s.scalars(
                    select(Reservation)
                    .where(Reservation.state == BOOKED, Reservation.ends_at <= now)
                    .with_for_update()
                )
            )
            for row in due:
                self._charge(s, row, now)
        return len(due)

    @staticmethod
    def _charge(s: Session, row: Reservation, now: datetime) -> None:
        qty = card_hours(row.cards, row.starts_at, row.ends_at)
        add_charge(
            s,
            Charge(
                task_id=row.id,
                attempt=0,
                tenant=row.tenant,
                owner=row.owner,
                pool_cpi=row.pool_cpi,
                provider_prefix=row.provider_prefix,
                tier=Tier.RESERVED.value,
                unit=Unit.CARD_HOUR.value,
                quantity=qty,
                unit_price=row.unit_price,
                price_entry_id=row.price_entry_id,
                amount=amount(qty, row.unit_price),
                currency=row.currency,
                period=period_of(now),
                created_at=now,
            ),
        )
        row.state = CHARGED
