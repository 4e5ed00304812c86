"""Secrets tasks name: stored encrypted, never returned."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from computenet.store.tables import Base, UTCDateTime


class Secret(Base):
    """One secret of one tenant (or user), encrypted with the node's secrets key."""

    __tablename__ = "secrets"
    scope: Mapped[str] = mapped_column(String(256), primary_key=True)  # who it belongs to
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)  # Fernet token
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
