"""Scheduling tables: the dataset registry (name -> size and the regions holding replicas)
and tenants' fair-share settings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from computenet.store.tables import Base, UTCDateTime


class Dataset(Base):
    """A named dataset that tasks may use; placement moves work to its replicas' regions."""

    __tablename__ = "datasets"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    regions: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ShareSetting(Base):
    """A tenant's fair-share weight and optional quota (cards; CPU work counts cores / 8),
    set by an operator; tenants without a row have weight 1 and no quota."""

    __tablename__ = "tenant_shares"
    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    weight: Mapped[float] = mapped_column(Float)
    quota_cards: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
