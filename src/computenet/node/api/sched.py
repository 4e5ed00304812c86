"""Scheduling endpoints under ``/api/v1``: offers (discovery), explain, datasets, and
tenants' fair-share weights and quotas."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from computenet.errors import InvalidInput
from computenet.model.task import Policy, TaskSpec
from computenet.node.access import OPERATOR_ROLES
from computenet.node.api.deps import Admin, Runtime, User, owner_scope, payer
from computenet.node.scheduling import (
    DatasetIn,
    DatasetOut,
    ExplainOut,
    OfferOut,
    ShareIn,
    ShareOut,
)

router = APIRouter(prefix="/api/v1", tags=["scheduling"])
MAX_OFFERS = 1000


def template(
    accelerator: str | None,
    vendor: str | None,
    count: int,
    min_memory_gib: int | None,
    cpus: int,
    ram_gb: float,
    regions: list[str],
    max_price: str | None,
    datasets: list[str],
    runtime_hint_s: int | None,
    workload: str | None,
) -> TaskSpec:
    """A task template from query parameters (validated like a task)."""
    res: dict[str, object] = {"cpu_cores": cpus, "ram_gb": ram_gb}
    if accelerator or vendor:
        res["accelerator"] = {
            "model": accelerator,
            "vendor": vendor,
            "count": count,
            "min_memory_gib": min_memory_gib,
        }
    place: dict[str, object] = {"regions": regions, "datasets": datasets}
    if max_price is not None:
        place["max_price_per_card_hour"] = max_price
    if runtime_hint_s is not None:
        place["runtime_hint_s"] = runtime_hint_s
    if workload is not None:
        place["workload"] = workload
    try:
        return TaskSpec.model_validate(
            {"executors": [{"command": ["true"]}], "resources": res, "placement": place}
        )
    except ValueError as exc:
        raise InvalidInput(f"invalid offer query: {exc}") from None


@router.get("/offers", response_model=list[OfferOut])
def offers(
    rt: Runtime,
    _p: User,
    accelerator: Annotated[str | None, Query(max_length=64)] = None,
    vendor: Annotated[str | None, Query(max_length=64)] = None,
    count: Annotated[int, Query(ge=1, le=1024)] = 1,
    min_memory_gib: Annotated[int | None, Query(ge=1, le=16384)] = None,
    cpus: Annotated[int, Query(ge=1, le=4096)] = 1,
    ram_gb: Annotated[float, Query(gt=0, le=65536)] = 1.0,
    region: Annotated[list[str] | None, Query(max_length=64)] = None,
    max_price: Annotated[str | None, Query(max_length=32)] = None,
    dataset: Annotated[list[str] | None, Query(max_length=64)] = None,
    runtime_hint_s: Annotated[int | None, Query(ge=1)] = None,
    workload: Annotated[str | None, Query(max_length=128)] = None,
    policy: Policy = Policy.BALANCED,
    limit: Annotated[int, Query(ge=1, le=MAX_OFFERS)] = 20,
) -> list[OfferOut]:
    """Pools that match a task template, ranked under ``policy``, with estimates."""
    spec = template(
        accelerator,
        vendor,
        count,
        min_memory_gib,
        cpus,
        ram_gb,
        region or [],
        max_price,
        dataset or [],
        runtime_hint_s,
        workload,
    )
    return rt.sched.offers(spec, policy, limit)


@router.post("/offers", response_model=list[OfferOut])
def offers_for_task(
    spec: TaskSpec,
    rt: Runtime,
    _p: User,
    policy: Policy | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_OFFERS)] = 20,
) -> list[OfferOut]:
    """The same for a full task (variants included) as the template."""
    return rt.sched.offers(spec, policy, limit)


@router.get("/tasks/{task_id}/explain", response_model=ExplainOut)
def explain_task(task_id: str, rt: Runtime, p: User) -> ExplainOut:
    """Why a task waits (each constraint with the pools it excluded) or why its pool won."""
    return rt.sched.explain(task_id, owner_scope(p))


@router.post("/datasets", response_model=DatasetOut, status_code=201)
def add_dataset(body: DatasetIn, rt: Runtime, p: User) -> DatasetOut:
    """Register a dataset (name, size, regions holding replicas) or update your own."""
    return rt.sched.add_dataset(body, p.owner, p.kind == "admin")


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(rt: Runtime, _p: User) -> list[DatasetOut]:
    """Every registered dataset."""
    return rt.sched.datasets()


@router.get("/datasets/{name}", response_model=DatasetOut)
def get_dataset(name: str, rt: Runtime, _p: User) -> DatasetOut:
    """One dataset."""
    return rt.sched.datasets(name)[0]


@router.put("/shares/{tenant}", response_model=ShareOut)
def set_share(
    tenant: Annotated[str, Path(min_length=1, max_length=128)],
    body: ShareIn,
    rt: Runtime,
    _p: Admin,
) -> ShareOut:
    """Set a tenant's fair-share weight and quota (operators)."""
    return rt.sched.set_share(tenant, body)


@router.get("/shares", response_model=list[ShareOut])
def shares(rt: Runtime, p: User) -> list[ShareOut]:
    """Fair-share settings and what each tenant holds now: every tenant for operators, the
    caller's own otherwise."""
    if p.kind in OPERATOR_ROLES:
        return rt.sched.shares()
    return rt.sched.shares(payer(p))
