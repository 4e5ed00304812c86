"""The service directory (``rt.services``): what the router needs to find a service's
replicas, read from the store.

It lists the services deployed here and also replicas of other nodes' services forwarded
here (any task whose spec carries a ``service`` binding), each with where it runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from computenet.model.pool import PoolSpec
from computenet.model.service import Access, ServiceBinding, ServiceSpec
from computenet.model.task import TERMINAL_STATES, TaskSpec, TaskState
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_federation import FedForward, FedPool
from computenet.store.tables_services import Service, ServiceKey

CACHE_S = 0.5  # the router asks on every request; the store is read at most this often
NAME_PREFIX = "service/"  # replica tasks are named service/<name>/<version>/<replica>
_RUNS_ON_GATEWAY = (TaskState.INITIALIZING.value, TaskState.RUNNING.value)


@dataclass(frozen=True)
class ServiceView:
    """A service deployed on this node, as its owner last set it."""

    name: str
    version: str
    access: Access
    key_hashes: tuple[str, ...]
    home_node: str
    owner: str
    tenant: str
    state: str
    min_replicas: int
    max_replicas: int
    desired: int
    spec: ServiceSpec


@dataclass(frozen=True)
class ReplicaPlacement:
    """One live replica task and where it runs."""

    task_id: str
    version: str
    replica: int
    state: TaskState
    gateway_id: str | None  # set while it runs on one of this node's gateways
    node_code: str  # this node, or the node it was forwarded to
    region: str | None
    pool_cpi: str | None
    price_per_card_hour: Decimal | None
    binding: ServiceBinding


@dataclass(frozen=True)
class PoolWhere:
    """A pool's region, price and serving node, local or from the federation index."""

    region: str
    price_per_card_hour: Decimal
    node_code: str
    gateway_id: str | None


def pool_where(s: Session, cpi: str, node_code: str) -> PoolWhere | None:
    """Where pool ``cpi`` is: a local pool's gateway, or the node serving a remote one."""
    local = s.get(t.Pool, cpi)
    if local is not None:
        spec = PoolSpec.model_validate(local.spec)
        return PoolWhere(spec.region.code, spec.price_per_card_hour, node_code, local.gateway_id)
    remote = s.get(FedPool, cpi)
    if remote is not None:
        spec = PoolSpec.model_validate(remote.record["spec"])
        return PoolWhere(spec.region.code, spec.price_per_card_hour, remote.owner, None)
    return None


def view_of(row: Service, keys: list[str]) -> ServiceView:
    """The directory's view of a service row and its key hashes."""
    spec = ServiceSpec.model_validate(row.spec)
    return ServiceView(
        name=row.name,
        version=row.version,
        access=spec.access,
        key_hashes=tuple(keys),
        home_node=row.home_node,
        owner=row.owner,
        tenant=row.tenant,
        state=row.state,
        min_replicas=row.min_replicas,
        max_replicas=row.max_replicas,
        desired=row.desired,
        spec=spec,
    )


class ServiceDirectory:
    """Finds services and their live replicas (``rt.services``)."""

    def __init__(self, db: Database, node_code: str) -> None:
        self.db = db
        self.node_code = node_code
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[ReplicaPlacement]]] = {}

    def invalidate(self) -> None:
        """Forget cached answers (the controller calls it after each change)."""
        with self._lock:
            self._cache.clear()

    def find(self, name: str) -> ServiceView | None:
        """The service ``name`` deployed on this node, or None."""
        with self.db.read() as s:
            row = s.get(Service, name)
            if row is None:
                return None
            return view_of(row, self._keys(s, name))

    def replicas(self, name: str) -> list[ReplicaPlacement]:
        """Live replica tasks of ``name`` known here: made here, or forwarded here."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and now - hit[0] < CACHE_S:
                return hit[1]
        with self.db.read() as s:
            out = self._replicas(s, name)
        with self._lock:
            self._cache[name] = (now, out)
        return out

    @staticmethod
    def _keys(s: Session, name: str) -> list[str]:
        return sorted(s.scalars(select(ServiceKey.key_hash).where(ServiceKey.service == name)))

    def _replicas(self, s: Session, name: str) -> list[ReplicaPlacement]:
        home = s.get(Service, name)
        # Keys change without a new version: a service homed here checks today's keys.
        keys = self._keys(s, name) if home is not None else None
        rows = s.scalars(
            select(t.Task)
            .where(
                t.Task.name.startswith(f"{NAME_PREFIX}{name}/", autoescape=True),
                t.Task.state.not_in([x.value for x in TERMINAL_STATES]),
            )
            .order_by(t.Task.seq)
        )
        out = []
        for row in rows:
            binding = TaskSpec.model_validate(row.spec).service
            if binding is None or binding.name != name:
                continue  # a user's task that merely has such a name
            if keys is not None:
                binding = binding.model_copy(update={"key_hashes": keys})
            where = pool_where(s, row.pool_cpi, self.node_code) if row.pool_cpi else None
            forward = s.get(FedForward, row.id)
            node = forward.target if forward is not None else self.node_code
            on_gateway = row.state in _RUNS_ON_GATEWAY and forward is None
            out.append(
                ReplicaPlacement(
                    task_id=row.id,
                    version=binding.version,
                    replica=binding.replica,
                    state=TaskState(row.state),
                    gateway_id=row.lease_gateway_id if on_gateway else None,
                    node_code=where.node_code if where is not None and forward is None else node,
                    region=where.region if where is not None else None,
                    pool_cpi=row.pool_cpi,
                    price_per_card_hour=where.price_per_card_hour if where else None,
                    binding=binding,
                )
            )
        return out
