"""SQLAlchemy 2 table definitions. Schema changes go through Alembic migrations only."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine


class ExactDecimal(TypeDecorator[Decimal]):
    """Money and usage amounts: NUMERIC on PostgreSQL, text on SQLite (which has no exact type)."""

    impl = String(48)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(30, 9))
        return dialect.type_descriptor(String(48))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps always stored and returned as aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            from datetime import UTC

            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base for every ComputeNet table."""


class NodeMeta(Base):
    """Key/value facts about this node (its code, when it was created)."""

    __tablename__ = "node_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Token(Base):
    """An API, gateway or enrolment credential. Only its SHA-256 hash is stored."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The role: admin | operator | user | provider | gateway | enrol (node/access.py).
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True)  # organisation
    scopes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # None: the role's
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)  # e.g. "ci bot"


class Provider(Base):
    """A provider enrolled on this node; its prefix is ``<node-code>/<label>``."""

    __tablename__ = "providers"
    prefix: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Gateway(Base):
    """A gateway process serving one provider."""

    __tablename__ = "gateways"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider_prefix: Mapped[str] = mapped_column(ForeignKey("providers.prefix"))
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Pool(Base):
    """A pool record: its description plus live state. The CPI never changes."""

    __tablename__ = "pools"
    cpi: Mapped[str] = mapped_column(String(256), primary_key=True)
    provider_prefix: Mapped[str] = mapped_column(ForeignKey("providers.prefix"), index=True)
    gateway_id: Mapped[str] = mapped_column(ForeignKey("gateways.id"))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    health: Mapped[str] = mapped_column(String(16))
    running_tasks: Mapped[int] = mapped_column(Integer, default=0)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)


class Task(Base):
    """A task and its current state. Every change is committed before it is acknowledged."""

    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)  # listing and FIFO order
    owner: Mapped[str] = mapped_column(String(256))
    client_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    cpu_cores: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(BigInteger)
    accelerators: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    pool_cpi: Mapped[str | None] = mapped_column(String(256), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    lease_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    lease_gateway_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True)  # who pays
    # The most this task can cost (time limit x cards or cores x price), held against its
    # tenant's budget until it ends; None when no budget applied at submit.
    max_charge: Mapped[Decimal | None] = mapped_column(ExactDecimal, nullable=True)
    # The reservation this attempt was placed on (its cards are paid for by the reservation).
    reservation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        UniqueConstraint("owner", "client_key", name="uq_tasks_owner_client_key"),
        Index("ix_tasks_state_pool", "state", "pool_cpi"),
        Index("ix_tasks_lease_expires", "lease_expires_at"),
    )


class TaskEvent(Base):
    """The state timeline and system log of a task."""

    __tablename__ = "task_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")


class ExecutorLog(Base):
    """Output of one executor in one attempt; the text keeps the tail when it grows large."""

    __tablename__ = "executor_logs"
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stdout: Mapped[str] = mapped_column(Text, default="")
    stderr: Mapped[str] = mapped_column(Text, default="")
    stdout_chars: Mapped[int] = mapped_column(BigInteger, default=0)  # total ever received
    stderr_chars: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageRecord(Base):
    """Measured usage of one task attempt. Written once, never updated."""

    __tablename__ = "usage_records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    pool_cpi: Mapped[str] = mapped_column(String(256))
    accelerator_model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cards: Mapped[int] = mapped_column(Integer)
    wall_s: Mapped[Decimal] = mapped_column(ExactDecimal)
    card_hours: Mapped[Decimal] = mapped_column(ExactDecimal)
    cpu_core_hours: Mapped[Decimal] = mapped_column(ExactDecimal)
    memory_gib_hours: Mapped[Decimal] = mapped_column(ExactDecimal)
    pflops_hours_fp16: Mapped[Decimal | None] = mapped_column(ExactDecimal, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("task_id", "attempt", name="uq_usage_task_attempt"),)
