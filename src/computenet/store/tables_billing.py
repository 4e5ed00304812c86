"""Billing tables: price books, charges, tenants' budgets and advance reservations."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Dialect, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from computenet.store.tables import Base, ExactDecimal, UTCDateTime


class ExactAmount(ExactDecimal):
    """A charge: a price (up to 6 decimal places) times a quantity (9), kept to the digit.

    NUMERIC(38, 15) on PostgreSQL holds every such product exactly; SQLite keeps the text.
    """

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(38, 15))
        return dialect.type_descriptor(String(64))


FINAL = -1  # ``Charge.interval_index`` of an attempt's closing charge


class InterimUsage(Base):
    """One elapsed metering interval of a running service replica (``billing.metering``).

        ``interval_index`` k covers the attempt's seconds ``[k * length, (k + 1) * length)``; its
        quantities are the difference of the attempt's usage measured at both ends, so the
        intervals and the closing charge add up to the attempt's usage exactly. ``requests`` is
        what the replica served since the previous row (the router's counts, flushed here); a row
    with a negative ``interval_index`` carries requests only (no usage, no charge).
    """

    __tablename__ = "interim_usage"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    task_id: Mapped[str] = mapped_column(String(96))
    attempt: Mapped[int] = mapped_column(Integer)
    interval_index: Mapped[int] = mapped_column(Integer)
    service: Mapped[str] = mapped_column(String(40))
    tenant: Mapped[str] = mapped_column(String(128))
    pool_cpi: Mapped[str] = mapped_column(String(256))
    accelerator_model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cards: Mapped[int] = mapped_column(Integer)
    wall_s: Mapped[Decimal] = mapped_column(ExactDecimal)
    card_hours: Mapped[Decimal] = mapped_column(ExactDecimal)
    cpu_core_hours: Mapped[Decimal] = mapped_column(ExactDecimal)
    pflops_hours_fp16: Mapped[Decimal | None] = mapped_column(ExactDecimal, nullable=True)
    requests: Mapped[int] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(7))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("task_id", "attempt", "interval_index", name="uq_interim_usage_interval"),
        Index("ix_interim_usage_tenant_period", "tenant", "period"),
    )


class PriceEntry(Base):
    """One price from a date on: for a pool, every pool of a provider, or every pool ("*").

    Entries are only added, never changed: a new price is a new entry with a later
    ``effective_from``, so what was charged can always be explained.
    """

    __tablename__ = "price_entries"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    scope: Mapped[str] = mapped_column(String(256))  # pool CPI, provider prefix, or "*"
    tier: Mapped[str] = mapped_column(String(16))  # on_demand | spot | reserved
    unit: Mapped[str] = mapped_column(String(16))  # card_hour | core_hour | pflops_hour
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[Decimal] = mapped_column(ExactDecimal)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_price_entries_scope", "scope", "tier", "effective_from"),)


class Charge(Base):
    """What one task attempt costs: its usage record's quantity times the price then."""

    __tablename__ = "charges"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    task_id: Mapped[str] = mapped_column(String(96))
    attempt: Mapped[int] = mapped_column(Integer)
    tenant: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(256))
    pool_cpi: Mapped[str] = mapped_column(String(256))
    provider_prefix: Mapped[str] = mapped_column(String(128))
    tier: Mapped[str] = mapped_column(String(16))
    unit: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal)
    unit_price: Mapped[Decimal] = mapped_column(ExactDecimal)
    price_entry_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    amount: Mapped[Decimal] = mapped_column(ExactAmount)
    currency: Mapped[str] = mapped_column(String(3))
    period: Mapped[str] = mapped_column(String(7))  # "YYYY-MM" of the attempt's end, UTC
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # FINAL for the attempt's closing charge; 0, 1, ... for a running replica's interim
    # charges, one per metering interval (``billing.metering``).
    interval_index: Mapped[int] = mapped_column(Integer, server_default="-1")

    __table_args__ = (
        # A re-sent usage report, or a metering round run twice (a restart), can never
        # charge an attempt, or one interval of it, twice.
        UniqueConstraint("task_id", "attempt", "interval_index", name="uq_charges_task_attempt"),
        Index("ix_charges_tenant_period", "tenant", "period"),
        Index("ix_charges_provider_period", "provider_prefix", "period"),
    )


class Budget(Base):
    """A tenant's spending limit per calendar month (UTC), with a warning threshold."""

    __tablename__ = "budgets"
    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    monthly_limit: Mapped[Decimal] = mapped_column(ExactDecimal)
    warn_fraction: Mapped[Decimal] = mapped_column(ExactDecimal)
    # Charged so far in ``period`` ("YYYY-MM"), kept with each charge so that checking a
    # submission costs one row, not a sum over the month.
    period: Mapped[str] = mapped_column(String(7))
    spent: Mapped[Decimal] = mapped_column(ExactAmount)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Reservation(Base):
    """Cards of one pool set aside for a tenant over a time window, billed for the window.

    ``state`` is ``booked`` until the window has ended (or was cancelled part way) and the
    charge is written, then ``charged``; ``cancelled`` when called off before it began.
    """

    __tablename__ = "reservations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(256))
    pool_cpi: Mapped[str] = mapped_column(String(256))
    provider_prefix: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(64))
    cards: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)  # moved earlier by a cancel
    state: Mapped[str] = mapped_column(String(16))
    unit_price: Mapped[Decimal] = mapped_column(ExactDecimal)  # per card-hour, reserved tier
    price_entry_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    currency: Mapped[str] = mapped_column(String(3))
    # The whole window's cost, held against the tenant's budget until it is charged.
    max_charge: Mapped[Decimal] = mapped_column(ExactAmount)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_reservations_pool", "pool_cpi", "ends_at"),
        Index("ix_reservations_tenant", "tenant", "state"),
        Index("ix_reservations_state", "state", "ends_at"),
    )
