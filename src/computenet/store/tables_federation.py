"""Federation tables: enrolled child nodes, the pool index, forwarded tasks, signed usage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from computenet.store.tables import Base, UTCDateTime


class FedChild(Base):
    """A child node enrolled here: its certificate facts and how recently it spoke."""

    __tablename__ = "fed_children"
    code: Mapped[str] = mapped_column(String(140), primary_key=True)
    level: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(512))
    public_key: Mapped[str] = mapped_column(String(64))
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)  # last sync delta applied
    silent: Mapped[bool] = mapped_column(Boolean, default=False)


class FedPool(Base):
    """A pool record in this node's index: its own, its subtree's, or learned from above."""

    __tablename__ = "fed_pools"
    cpi: Mapped[str] = mapped_column(String(256), primary_key=True)
    owner: Mapped[str] = mapped_column(String(140), index=True)  # node code serving the pool
    via: Mapped[str] = mapped_column(String(140), index=True)  # self, a child, or the parent
    url: Mapped[str] = mapped_column(String(512))  # the owner node's URL (access path)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    health: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(BigInteger, index=True)  # this node's change counter
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FedForward(Base):
    """A task this node forwarded to the node owning its pool (kept at the submitting node)."""

    __tablename__ = "fed_forwards"
    task_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    target: Mapped[str] = mapped_column(String(140), index=True)
    target_url: Mapped[str] = mapped_column(String(512))
    pool_cpi: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16), index=True)  # sent|confirmed|done|revoked
    events_seen: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FedInbound(Base):
    """A task forwarded to this node; it is queued only once its origin confirms it."""

    __tablename__ = "fed_inbound"
    task_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    origin: Mapped[str] = mapped_column(String(140))
    origin_url: Mapped[str] = mapped_column(String(512))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending|confirmed|dropped
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FedUsage(Base):
    """A usage record signed by the node that ran the task, kept for settlement."""

    __tablename__ = "fed_usage"
    task_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    signer: Mapped[str] = mapped_column(String(140))
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
