"""Measured throughput: declared on the right pools, used for billing, refused when inflated."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from computenet.errors import InvalidInput
from computenet.gateway.measure import Throughput, attach_measurements
from computenet.model.pool import Accelerator, PoolSpec
from computenet.model.protocol import DeclarePools, TaskReport, UsageReport
from computenet.model.task import TaskSpec, TaskState
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings

H100 = Accelerator(vendor="nvidia", model="nvidia-h100-sxm", memory_mib=81559, count=8)
GPU_POOL = PoolSpec(
    label="h100",
    cpu_cores=64,
    memory_mib=1 << 20,
    accelerator=H100,
    labels={"gpu-name": "NVIDIA H100 80GB HBM3"},
)
CPU_POOL = PoolSpec(label="cpu", cpu_cores=2, memory_mib=4096)
GPU = Throughput(
    Decimal("40"), Decimal("51"), Decimal("750"), "cuda:0 NVIDIA H100 80GB HBM3", "t", 1
)
CPU = Throughput(Decimal("0.12"), Decimal("0.25"), None, "cpu: x", "numpy", 1)


def test_figures_go_to_the_pools_they_belong_to() -> None:
    gpu_pool, cpu_pool = attach_measurements([GPU_POOL, CPU_POOL], CPU, GPU)
    assert gpu_pool.measured is not None and gpu_pool.measured.fp16_tflops == Decimal("750")
    assert cpu_pool.measured is not None and cpu_pool.measured.fp64_tflops == Decimal("0.12")
    assert cpu_pool.measured.fp16_tflops is None
    other = Throughput(None, None, Decimal("100"), "cuda:0 Tesla T4", "t", 1)
    [untouched] = attach_measurements([GPU_POOL], None, other)  # a different card
    assert untouched.measured is None


def _runtime(tmp_path: Path) -> tuple[NodeRuntime, str]:
    rt = NodeRuntime(NodeSettings(data_dir=tmp_path))
    rt.bootstrap()
    prefix, token = rt.enrol_provider("acme", "")
    rt.auth.redeem_enrolment(token)
    return rt, rt.dispatch.register_gateway(prefix, "gw")


def test_billing_uses_the_measured_fp16_figure(tmp_path: Path) -> None:
    rt, gid = _runtime(tmp_path)
    [measured] = attach_measurements([GPU_POOL], None, GPU)
    rt.dispatch.declare_pools(gid, DeclarePools(pools=[measured]))
    spec = TaskSpec.model_validate(
        {"executors": [{"command": ["true"]}], "resources": {"accelerator": {"count": 2}}}
    )
    tid, _ = rt.tasks.submit(spec, "alice")
    rt.placer.schedule_pass()
    [lease] = rt.dispatch.lease(gid, 1)
    usage = UsageReport(wall_s=Decimal("0.9"), cpu_cores=1, memory_mib=1, cards=2)
    rt.dispatch.report(
        gid, tid, TaskReport(lease_id=lease.lease_id, state=TaskState.COMPLETE, usage=usage)
    )
    [u] = rt.tasks.get(tid).usage or []
    # 2 cards x 0.9 s = 0.0005 card-hours; x 750 TFLOPS measured (not the catalog's 989) / 1000
    assert u.card_hours == Decimal("0.000500000")
    assert u.pflops_hours_fp16 == Decimal("0.000375000")


def test_an_inflated_measurement_is_refused(tmp_path: Path) -> None:
    rt, gid = _runtime(tmp_path)
    fake = Throughput(None, None, Decimal("5000"), "cuda:0 NVIDIA H100 80GB HBM3", "t", 1)
    [inflated] = attach_measurements([GPU_POOL], None, fake)
    with pytest.raises(InvalidInput, match="above the nvidia-h100-sxm peak"):
        rt.dispatch.declare_pools(gid, DeclarePools(pools=[inflated]))
