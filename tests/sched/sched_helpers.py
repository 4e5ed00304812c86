"""Small builders for scheduler-core tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from computenet.model.pool import Accelerator, Capacity, PoolHealth, PoolSpec, Region, Software
from computenet.model.task import TaskSpec
from computenet.sched.core import PoolView, TaskView


def gpu_pool(
    cpi: str,
    model: str = "nvidia-v100-sxm2-32g",
    price: str = "5",
    region: str = "51",
    *,
    vendor: str = "nvidia",
    cards: int = 8,
    machines: int = 1,
    memory_gib: int = 32,
    free_cards: int | None = None,
    software: Software | None = None,
    labels: dict[str, str] | None = None,
    arch: str = "x86_64",
) -> PoolView:
    """A healthy GPU pool, all free unless ``free_cards`` says otherwise."""
    spec = PoolSpec(
        label=cpi.rsplit("/", 1)[1],
        architecture=arch,  # type: ignore[arg-type]
        cpu_cores=64,
        memory_mib=512 * 1024,
        machines=machines,
        accelerator=Accelerator(
            vendor=vendor, model=model, memory_mib=memory_gib * 1024, count=cards
        ),
        region=Region(code=region),
        price_per_card_hour=Decimal(price),
        software=software or Software(),
        labels=labels or {},
    )
    free = spec.total()
    if free_cards is not None:
        free = Capacity(
            cpu_cores=free.cpu_cores, memory_mib=free.memory_mib, accelerators=free_cards
        )
    return PoolView(cpi, spec, PoolHealth.HEALTHY, free)


def gpu_task(
    tid: str = "t",
    count: int = 1,
    *,
    tenant: str = "",
    priority: int = 0,
    seq: int = 0,
    resources: dict[str, Any] | None = None,
    **placement: Any,
) -> TaskView:
    """A task wanting ``count`` cards; ``placement`` fields and extra ``resources`` merge in."""
    res: dict[str, Any] = {"accelerator": {"count": count}, **(resources or {})}
    variants = placement.pop("variants", [])
    spec = TaskSpec.model_validate(
        {
            "executors": [{"command": ["true"]}],
            "resources": res,
            "placement": placement,
            "variants": variants,
        }
    )
    return TaskView(tid, spec, priority, seq, tenant)
