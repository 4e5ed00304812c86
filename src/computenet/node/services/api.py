"""``/api/v1/services``: deploy, list, status, scale, logs, delete, and service keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from computenet.errors import NotFound
from computenet.model.service import ServiceSpec
from computenet.model.service_api import (
    DeployOut,
    KeyOut,
    LoadOut,
    ReplicaLogsOut,
    ReplicaOut,
    ScaleIn,
    ServiceOut,
)
from computenet.model.task import TaskState
from computenet.node.api.deps import Runtime, User, owner_scope, payer
from computenet.node.auth import Principal
from computenet.node.regions import place, province_name
from computenet.node.runtime import NodeRuntime
from computenet.node.views import View
from computenet.store.tables_services import Service

router = APIRouter(prefix="/api/v1/services", tags=["services"])


def _owner(p: Principal) -> str | None:
    """Whose services the caller may touch: ``None`` for operators (all)."""
    scope = owner_scope(p)
    if scope is None:
        return None
    # A provider's token sees work on its pools, not services: it sees none.
    return scope.owner if scope.owner is not None else "\x00no-services"


def _out(rt: NodeRuntime, row: Service, detail: bool) -> ServiceOut:
    found = rt.services.replicas(row.name)
    plane = rt.service_controller.plane()
    out = ServiceOut(
        name=row.name,
        version=row.version,
        state=row.state,
        access=str(row.spec.get("access", "key")),
        owner=row.owner,
        tenant=row.tenant,
        home_node=row.home_node,
        min=row.min_replicas,
        max=row.max_replicas,
        desired=row.desired,
        live=len(found),
        note=rt.service_controller.notes.get(row.name),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
    if not detail:
        return out
    load = plane.service_load(row.name) if plane is not None else None
    if load is not None:
        out.load = LoadOut(
            in_flight=load.in_flight,
            requests_per_s=load.requests_per_s,
            tokens_per_s=load.tokens_per_s,
        )
    per_replica = load.per_replica if load is not None else {}
    out.replicas = [
        ReplicaOut(
            task_id=r.task_id,
            version=r.version,
            replica=r.replica,
            state=r.state,
            node=r.node_code,
            gateway=r.gateway_id,
            region=r.region,
            region_name=province_name(r.region) if r.region else None,
            lat=place(r.region)[0] if r.region else None,
            lon=place(r.region)[1] if r.region else None,
            pool=r.pool_cpi,
            price_per_card_hour=r.price_per_card_hour,
            healthy=plane.healthy(r.task_id) if plane is not None else None,
            in_flight=per_replica.get(r.task_id) if plane is not None else None,
        )
        for r in found
    ]
    return out


@router.post("", response_model=DeployOut, status_code=201)
def deploy(spec: ServiceSpec, rt: Runtime, p: User, response: Response) -> DeployOut:
    """Deploy a service, or roll it to a new version (200 when it already existed)."""
    rt.secrets.require(payer(p), spec.secrets.values())
    done = rt.service_controller.deploy(spec, p.owner, payer(p))
    if not done.created:
        response.status_code = 200
    return DeployOut(
        name=done.name,
        version=done.version,
        created=done.created,
        rolling=done.rolling,
        key=done.key,
    )


@router.get("", response_model=list[ServiceOut], response_model_exclude_none=True)
def list_services(rt: Runtime, p: User) -> list[ServiceOut]:
    """The services the caller may see, by name."""
    return [_out(rt, row, False) for row in rt.service_controller.visible(_owner(p))]


@router.get("/{name}", response_model=ServiceOut, response_model_exclude_none=True)
def status(name: str, rt: Runtime, p: User) -> ServiceOut:
    """A service with its live replicas: state, node, gateway, region, price, health."""
    return _out(rt, rt.service_controller.get(name, _owner(p)), True)


@router.post("/{name}/scale", response_model=ServiceOut, response_model_exclude_none=True)
def scale(name: str, body: ScaleIn, rt: Runtime, p: User) -> ServiceOut:
    """Set the replica bounds; the autoscaler stays within them."""
    row = rt.service_controller.scale(name, _owner(p), body.min, body.max)
    return _out(rt, row, True)


@router.delete("/{name}", status_code=202)
def delete(name: str, rt: Runtime, p: User) -> dict[str, str]:
    """Delete a service: its replica tasks are cancelled, then it goes."""
    rt.service_controller.delete(name, _owner(p))
    return {"name": name, "state": "deleting"}


@router.get("/{name}/logs", response_model=ReplicaLogsOut, response_model_exclude_none=True)
def logs(
    name: str,
    rt: Runtime,
    p: User,
    replica: Annotated[int | None, Query(ge=0, le=100_000)] = None,
) -> ReplicaLogsOut:
    """The logs of one replica (the newest task of that index; default: the lowest)."""
    rows = rt.service_controller.replica_tasks(name, _owner(p))
    if replica is not None:
        rows = [r for r in rows if r.replica == replica]
    if not rows:
        raise NotFound(f"service {name!r} has no replica {replica if replica is not None else ''}")
    live = [r for r in rows if r.live]
    pick = min(live or rows, key=lambda r: (r.replica, -r.created_at.timestamp()))
    task = rt.tasks.get(pick.task_id, View.FULL, None)
    return ReplicaLogsOut(
        task_id=pick.task_id,
        replica=pick.replica,
        version=pick.version,
        state=task.state if task.state is not None else TaskState.UNKNOWN,
        attempts=task.attempts or [],
    )


@router.post("/{name}/keys", response_model=KeyOut, status_code=201)
def create_key(name: str, rt: Runtime, p: User) -> KeyOut:
    """A new API key for the service, shown only in this answer."""
    kid, key = rt.service_controller.create_key(name, _owner(p))
    row = next(k for k in rt.service_controller.keys(name, _owner(p)) if k.id == kid)
    return KeyOut(id=kid, created_at=row.created_at, key=key)


@router.get("/{name}/keys", response_model=list[KeyOut], response_model_exclude_none=True)
def list_keys(name: str, rt: Runtime, p: User) -> list[KeyOut]:
    """The service's keys (ids and dates only)."""
    return [
        KeyOut(id=k.id, created_at=k.created_at)
        for k in rt.service_controller.keys(name, _owner(p))
    ]


@router.delete("/{name}/keys/{key_id}", status_code=204)
def revoke_key(name: str, key_id: str, rt: Runtime, p: User) -> Response:
    """Revoke a key: callers using it are refused from the next request on."""
    rt.service_controller.revoke_key(name, _owner(p), key_id)
    return Response(status_code=204)
