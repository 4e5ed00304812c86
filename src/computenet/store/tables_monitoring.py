"""Monitoring tables: pool quality history, task timings and network measurements."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from computenet.store.tables import Base, UTCDateTime


class PoolSample(Base):
    """One periodic look at a pool: was it healthy, how old was its last heartbeat.

    Availability over a window is the fraction of its samples that were healthy.
    """

    __tablename__ = "mon_pool_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool_cpi: Mapped[str] = mapped_column(String(256))
    provider_prefix: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    healthy: Mapped[bool] = mapped_column(Boolean)
    heartbeat_age_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    running_tasks: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_mon_pool_samples_pool_at", "pool_cpi", "at"),
        Index("ix_mon_pool_samples_at", "at"),
    )


class TaskTiming(Base):
    """What monitoring keeps about one task: its trace id, the queue-wait estimate the
    scheduler gave (when it gives one) and when the first log byte arrived."""

    __tablename__ = "mon_task_timings"
    task_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(64))
    queue_wait_estimate_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    first_log_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RttSample(Base):
    """A round-trip time a gateway measured to its node, or a child node to its parent
    (``gateway_id`` is then ``node:<child code>``), with both ends' regions."""

    __tablename__ = "mon_rtt_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    gateway_id: Mapped[str] = mapped_column(String(32))
    from_region: Mapped[str] = mapped_column(String(8))
    to_region: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    rtt_ms: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_mon_rtt_samples_at", "at"),)
