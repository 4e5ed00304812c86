"""Inference services deployed on this node: the service, its replica tasks and its keys.

A replica IS a task (``tasks`` row with ``spec.service``); ``service_replicas`` only remembers
which tasks the controller made for which service, so it never scans every task's spec.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from computenet.store.tables import Base, UTCDateTime


class Service(Base):
    """One service deployed here; ``spec`` is the version replicas are rolled to."""

    __tablename__ = "services"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    home_node: Mapped[str] = mapped_column(String(140))
    owner: Mapped[str] = mapped_column(String(256), index=True)  # owner key of the deployer
    tenant: Mapped[str] = mapped_column(String(256))  # who pays for its replicas
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[str] = mapped_column(String(64))
    min_replicas: Mapped[int] = mapped_column(Integer)
    max_replicas: Mapped[int] = mapped_column(Integer)
    desired: Mapped[int] = mapped_column(Integer)  # what the autoscaler asks for now
    state: Mapped[str] = mapped_column(String(16))  # active | deleting
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ServiceReplica(Base):
    """A replica task the controller created for a service (any version, live or ended)."""

    __tablename__ = "service_replicas"
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    service: Mapped[str] = mapped_column(String(40))
    version: Mapped[str] = mapped_column(String(64))
    replica: Mapped[int] = mapped_column(Integer)
    live: Mapped[int] = mapped_column(Integer, default=1)  # 0 once its task ended
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_service_replicas_service_live", "service", "live"),)


class ServiceKey(Base):
    """One API key of a service: only its sha256 is stored; the key is shown once."""

    __tablename__ = "service_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    service: Mapped[str] = mapped_column(String(40), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
