"""Pools as columns of NumPy arrays, built once per scheduling round.

Every constraint and estimate is then one vectorized expression over all pools.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np
import numpy.typing as npt

from computenet.model.catalog import load_catalog
from computenet.model.pool import PoolHealth
from computenet.sched.network import DEFAULT_CARBON_G_PER_KWH, network_matrices, provinces
from computenet.sched.types import Context, PoolView

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]
CPU_TFLOPS_PER_CORE = 0.05  # only CPU pools' relative speed; CPU tasks are not scaled by it
GPU_FAMILIES = ("k80", "p100", "v100")


def version_number(text: str) -> float:
    """'12.4.1' -> 12004001.0 so versions compare as numbers; '' -> -1 (none installed)."""
    if not text:
        return -1.0
    parts = [int(p) if p.isdigit() else 0 for p in text.split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return float(parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2])


@lru_cache(maxsize=1)
def workload_throughputs() -> dict[str, dict[str, float]]:
    """Per-workload steps/s per GPU family, from the packaged Gavel-derived table."""
    text = resources.files("computenet.sched").joinpath("data/gavel_throughputs.csv").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    out: dict[str, dict[str, float]] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        out[row["workload"]] = {f: float(row[f]) for f in GPU_FAMILIES}
    return out


def gpu_family(model: str) -> str | None:
    """The throughput-table family of an accelerator model id, if it has one."""
    low = model.lower()
    return next((f for f in GPU_FAMILIES if f in low), None)


def card_tflops(model: str) -> float:
    """Dense FP16 TFLOPS per card from the catalog (0 when unknown)."""
    cat = load_catalog()
    info = cat.get(model) if model in cat else cat.resolve(model)
    if info is None or info.fp16_dense_tflops is None:
        return 0.0
    return float(info.fp16_dense_tflops)


class Interner:
    """Maps strings to small ints so string equality becomes integer comparison."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def get(self, key: str) -> int:
        """The id of ``key``, allocating one if new."""
        return self.ids.setdefault(key, len(self.ids))

    def find(self, key: str) -> int:
        """The id of ``key`` or -2 when no pool has it."""
        return self.ids.get(key, -2)


@dataclass
class PoolTable:
    """Column arrays over ``pools`` (same order)."""

    pools: Sequence[PoolView]
    cpis: list[str]
    index: dict[str, int]
    strings: Interner
    arch: I64
    vendor: I64
    model: I64
    family: list[str | None]
    card_mem_mib: F64
    cards_per_machine: F64
    machines: F64
    cores_per_machine: F64
    mem_per_machine: F64
    free_cpu: F64
    free_mem: F64
    free_cards: F64
    total_cards: F64
    total_cpu: F64
    healthy: B
    price_card: F64
    price_core: F64
    tflops: F64
    carbon: F64
    pue: F64
    province: I64
    region_codes: npt.NDArray[np.str_]
    driver: F64
    cuda: F64
    cann: F64
    runtimes: list[frozenset[str]]
    labels: list[dict[str, str]]
    wait_s: F64
    reliability: F64
    rtt: F64
    bandwidth: F64
    # Per pool, what its backend cannot do (capability -> reason).
    unsupported: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.cpis)

    def runtime_mask(self, runtime: str) -> B:
        """Pools that have container runtime ``runtime``."""
        return np.fromiter((runtime in r for r in self.runtimes), bool, len(self.cpis))

    def lacking(self, capabilities: frozenset[str]) -> B:
        """Pools whose backend cannot do one of ``capabilities``."""
        return np.fromiter(
            (not capabilities.isdisjoint(u) for u in self.unsupported), bool, len(self.cpis)
        )

    def label_mask(self, key: str, value: str) -> B:
        """Pools whose label ``key`` equals ``value``."""
        return np.fromiter((lb.get(key) == value for lb in self.labels), bool, len(self.cpis))


def build_table(pools: Sequence[PoolView], ctx: Context) -> PoolTable:
    """Turn pool views and the context's telemetry into column arrays."""
    n = len(pools)
    strings = Interner()
    prov = provinces()
    arch = np.empty(n, np.int64)
    vendor = np.full(n, -1, np.int64)
    model = np.full(n, -1, np.int64)
    f = {k: np.zeros(n) for k in ("cm", "cpm", "mach", "cores", "mem", "fc", "fm", "fa", "pc")}
    f.update({k: np.zeros(n) for k in ("pk", "tf", "co2", "pue", "drv", "cuda", "cann")})
    f.update({"wait": np.zeros(n), "rel": np.ones(n)})
    province = np.empty(n, np.int64)
    healthy = np.empty(n, bool)
    family: list[str | None] = [None] * n
    runtimes: list[frozenset[str]] = []
    labels: list[dict[str, str]] = []
    tflops_cache: dict[str, float] = {}
    for i, p in enumerate(pools):
        s = p.spec
        arch[i] = strings.get("arch:" + s.architecture.value)
        acc = s.accelerator
        if acc is not None:
            vendor[i] = strings.get("vendor:" + acc.vendor.lower())
            model[i] = strings.get("model:" + acc.model.lower())
            family[i] = gpu_family(acc.model)
            f["cm"][i] = acc.memory_mib
            f["cpm"][i] = acc.count
            if acc.model not in tflops_cache:
                tflops_cache[acc.model] = card_tflops(acc.model)
            measured = s.measured.fp16_tflops if s.measured else None
            f["tf"][i] = float(measured) if measured is not None else tflops_cache[acc.model]
        else:
            f["tf"][i] = CPU_TFLOPS_PER_CORE * s.cpu_cores
        f["mach"][i] = s.machines
        f["cores"][i] = s.cpu_cores
        f["mem"][i] = s.memory_mib
        f["fc"][i] = p.free.cpu_cores
        f["fm"][i] = p.free.memory_mib
        f["fa"][i] = p.free.accelerators
        f["pc"][i] = float(s.price_per_card_hour)
        f["pk"][i] = float(s.price_per_core_hour)
        province[i] = prov.of(s.region.code)
        carbon = s.labels.get("carbon_g_per_kwh")
        f["co2"][i] = _number(carbon, -1.0)
        f["pue"][i] = _number(s.labels.get("pue"), 1.3)
        f["drv"][i] = version_number(s.software.driver)
        f["cuda"][i] = version_number(s.software.cuda)
        f["cann"][i] = version_number(s.software.cann)
        runtimes.append(frozenset(r.lower() for r in s.software.container_runtimes))
        labels.append(s.labels)
        healthy[i] = p.health is PoolHealth.HEALTHY
        tel = ctx.telemetry.get(p.cpi)
        if tel is not None:
            f["wait"][i] = tel.queue_wait_s
            f["rel"][i] = min(1.0, max(0.01, tel.reliability))
    known = province >= 0
    grid = np.full(n, DEFAULT_CARBON_G_PER_KWH)
    grid[known] = prov.carbon_g_per_kwh[province[known]]
    carbon_arr = np.where(f["co2"] >= 0, f["co2"], grid)
    rtt, bw = network_matrices(dict(ctx.network))
    cpis = [p.cpi for p in pools]
    return PoolTable(
        pools=pools,
        cpis=cpis,
        index={c: i for i, c in enumerate(cpis)},
        strings=strings,
        arch=arch,
        vendor=vendor,
        model=model,
        family=family,
        card_mem_mib=f["cm"],
        cards_per_machine=f["cpm"],
        machines=f["mach"],
        cores_per_machine=f["cores"],
        mem_per_machine=f["mem"],
        free_cpu=f["fc"],
        free_mem=f["fm"],
        free_cards=f["fa"],
        total_cards=f["cpm"] * f["mach"],
        total_cpu=f["cores"] * f["mach"],
        healthy=healthy,
        price_card=f["pc"],
        price_core=f["pk"],
        tflops=f["tf"],
        carbon=carbon_arr,
        pue=f["pue"],
        province=province,
        region_codes=np.array([p.spec.region.code for p in pools], dtype="<U6"),
        driver=f["drv"],
        cuda=f["cuda"],
        cann=f["cann"],
        runtimes=runtimes,
        labels=labels,
        wait_s=f["wait"],
        reliability=f["rel"],
        rtt=rtt,
        bandwidth=bw,
        unsupported=[{c.value: why for c, why in p.spec.unsupported.items()} for p in pools],
    )


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default
