"""Capabilities as data: a pool declares what its backend cannot do, and the scheduler keeps
tasks that need it off that pool, saying why (issue 16)."""

from __future__ import annotations

from typing import Any

from sched_helpers import gpu_pool

from computenet.model.pool import Capability, PoolHealth, PoolSpec
from computenet.model.task import TaskSpec
from computenet.sched.core import PoolView, TaskView, schedule
from computenet.sched.explain import explain
from computenet.sched.types import Context

NO_STAGING = "the slurm backend does not stage inputs or outputs yet"
NO_GPUS = "TES 1.1 has no GPU field and the remote does not announce accelerator_count"


def _cpu_pool(cpi: str, **unsupported: str) -> PoolView:
    spec = PoolSpec(
        label=cpi.rsplit("/", 1)[1],
        cpu_cores=16,
        memory_mib=65536,
        unsupported={Capability(k): v for k, v in unsupported.items()},
    )
    return PoolView(cpi, spec, PoolHealth.HEALTHY, spec.total())


def _task(tid: str, **fields: Any) -> TaskView:
    spec = TaskSpec.model_validate({"executors": [{"command": ["true"]}], **fields})
    return TaskView(tid, spec, 0, 0)


STAGED = {"inputs": [{"url": "https://example.org/data.csv", "path": "/data/in.csv"}]}


def test_a_slurm_pool_never_receives_a_task_that_needs_staging() -> None:
    slurm = _cpu_pool("cn/hpc/slurm", staging=NO_STAGING)
    local = _cpu_pool("cn/lab/local")
    [d] = schedule([_task("t", **STAGED)], [slurm, local], Context())
    assert d.pool == "cn/lab/local"
    # Work with no data to stage may still go to Slurm.
    [plain] = schedule([_task("p")], [slurm], Context())
    assert plain.pool == "cn/hpc/slurm"


def test_a_task_only_incapable_pools_could_run_waits_with_the_reason() -> None:
    slurm = _cpu_pool("cn/hpc/slurm", staging=NO_STAGING)
    [d] = schedule([_task("t", **STAGED)], [slurm], Context())
    assert d.pool is None
    assert d.reason == f"1 pool cannot do what the task needs: staging ({NO_STAGING})"
    spec = TaskSpec.model_validate({"executors": [{"command": ["true"]}], **STAGED})
    why = explain("t", spec, [slurm])
    assert why.excluded == {"capability": 1} and why.eligible == 0
    assert NO_STAGING in why.reason and "staging" in why.reason


def test_a_tes_pool_without_gpus_never_receives_a_gpu_task() -> None:
    tes = gpu_pool("cn/tes/gpu")
    tes = PoolView(
        tes.cpi,
        tes.spec.model_copy(update={"unsupported": {Capability.GPUS: NO_GPUS}}),
        tes.health,
        tes.free,
    )
    gpu = _task("g", resources={"accelerator": {"count": 1}})
    [d] = schedule([gpu], [tes], Context())
    assert d.pool is None and NO_GPUS in d.reason and "gpus" in d.reason
    # A CPU task still runs there.
    [cpu] = schedule([_task("c")], [tes], Context())
    assert cpu.pool == "cn/tes/gpu"
    # With a capable pool beside it, the GPU task goes there.
    other = gpu_pool("cn/dc/gpu")
    [d] = schedule([gpu], [tes, other], Context())
    assert d.pool == "cn/dc/gpu"


def test_needs_follow_the_task() -> None:
    def needs(**fields: Any) -> set[Capability]:
        return set(TaskSpec.model_validate({"executors": [{"command": ["x"]}], **fields}).needs())

    assert needs() == set()
    assert needs(**STAGED) == {Capability.STAGING}
    assert needs(resources={"accelerator": {"count": 2}}) == {Capability.GPUS}
    assert Capability.ENV in needs(executors=[{"command": ["x"], "env": {"A": "1"}}])
    assert Capability.MULTIPLE_EXECUTORS in needs(executors=[{"command": ["x"]}] * 2)


def test_service_replicas_land_only_where_the_gateway_can_reach_them() -> None:
    from computenet.gateway.backends.slurm import NO_SERVICES
    from computenet.model.service import ServiceSpec

    replica = ServiceSpec.model_validate(
        {"name": "lm", "executor": {"command": ["python3", "server.py"]}}
    ).replica_task(0, [], "cn", 3600)
    slurm = _cpu_pool("cn/hpc/slurm", services=NO_SERVICES)
    local = _cpu_pool("cn/lab/local")
    [d] = schedule([TaskView("r", replica, 0, 0)], [slurm, local], Context())
    assert d.pool == "cn/lab/local"
    why = explain("r", replica, [slurm])
    assert why.eligible == 0 and f"services ({NO_SERVICES})" in why.reason
