"""Host probing for the local backend: what this machine has, turned into pool declarations.

The probe reads files under ``root`` (``/proc``, ``/etc``, ``/sys``) and runs a few tools through
an injectable ``run`` callable, so tests can replay recorded outputs. It never raises for a
missing tool: a host without ``nvidia-smi`` simply has no GPUs.
"""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from computenet.errors import InvalidInput
from computenet.gateway.backends.containers import CONTAINER_RUNTIMES
from computenet.gateway.probe_vendors import AcceleratorDevice, probe_accelerators
from computenet.model.cpi import validate_label
from computenet.model.pool import Accelerator, Architecture, PoolSpec, Region, Software

Runner = Callable[[list[str]], str | None]

# The exact fields we ask nvidia-smi for, in order; parse_nvidia_smi_csv relies on this order.
NVIDIA_SMI_QUERY_FIELDS: tuple[str, ...] = (
    "index", "name", "uuid", "memory.total", "driver_version", "utilization.gpu", "memory.used",
)  # fmt: skip
NVIDIA_SMI_QUERY: list[str] = [
    "nvidia-smi",
    "--query-gpu=" + ",".join(NVIDIA_SMI_QUERY_FIELDS),
    "--format=csv,noheader,nounits",
]
# The query fields above carry no CUDA version; the plain banner prints it.
NVIDIA_SMI_BANNER = ["nvidia-smi"]
RUNTIMES_ENV = "COMPUTENET_CONTAINER_RUNTIMES"  # e.g. "podman": declare only these runtimes
# Only flags that change where work can run; the full list is long and mostly noise.
INTERESTING_CPU_FLAGS: tuple[str, ...] = (
    "avx", "avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni",
    "amx_tile", "amx_bf16", "amx_int8", "neon", "sve", "sve2",
)  # fmt: skip
RUN_TIMEOUT_S = 10.0

_ARCHITECTURES = {
    "x86_64": Architecture.X86_64, "amd64": Architecture.X86_64,
    "aarch64": Architecture.AARCH64, "arm64": Architecture.AARCH64,
    "riscv64": Architecture.RISCV64,
}  # fmt: skip
# aarch64 kernels print no "model name"; these (implementer, part) ids come from the Linux
# kernel's arch/arm64/include/asm/cputype.h. Unknown ids are shown raw rather than guessed.
_ARM_PARTS = {
    ("0x41", "0xd0c"): "ARM Neoverse-N1", ("0x41", "0xd40"): "ARM Neoverse-V1",
    ("0x41", "0xd49"): "ARM Neoverse-N2", ("0x41", "0xd4f"): "ARM Neoverse-V2",
    ("0x48", "0xd01"): "HiSilicon Kunpeng-920", ("0x46", "0x001"): "Fujitsu A64FX",
}  # fmt: skip
_CUDA_VERSION = re.compile(r"CUDA Version\s*:\s*(\d+(?:\.\d+)*)")
_NON_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as nvidia-smi reports it."""

    index: int
    name: str
    uuid: str
    memory_mib: int
    driver_version: str
    cuda_version: str = ""
    utilization_pct: int | None = None
    memory_used_mib: int | None = None


@dataclass(frozen=True)
class HostProbe:
    """What one host offers, as found by :func:`probe_host`."""

    hostname: str
    architecture: Architecture
    cpu_model: str
    cpu_cores: int
    cpu_flags: tuple[str, ...]
    memory_mib: int
    os: str
    container_runtimes: tuple[str, ...]
    gpus: tuple[GpuInfo, ...]
    accelerators: tuple[AcceleratorDevice, ...] = ()  # Ascend, MLU, DCU: see probe_vendors


def _unavailable(value: str) -> bool:
    # Drivers print "[N/A]", "[Not Supported]", "[Unknown Error]"... and older ones a bare "N/A".
    return value == "N/A" or (value.startswith("[") and value.endswith("]"))


def _required_int(value: str, line: str, field: str) -> int:
    # Tolerate units in case someone drops "nounits" from the command.
    digits = value.removesuffix("MiB").removesuffix("%").strip()
    try:
        return int(digits)
    except ValueError:
        raise InvalidInput(f"nvidia-smi line {line!r}: {field} {value!r} is not a number") from None


def _optional_int(value: str, line: str, field: str) -> int | None:
    return None if _unavailable(value) else _required_int(value, line, field)


def parse_nvidia_smi_csv(text: str, *, cuda_version: str = "") -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=<NVIDIA_SMI_QUERY_FIELDS> --format=csv,noheader,nounits``.

    Unavailable utilization or used memory become ``None``; a line with the wrong number of
    fields or a bad required value raises :class:`InvalidInput` quoting the line.
    """
    gpus: list[GpuInfo] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(NVIDIA_SMI_QUERY_FIELDS):
            raise InvalidInput(
                f"nvidia-smi line {line!r}: expected {len(NVIDIA_SMI_QUERY_FIELDS)} "
                f"comma-separated fields ({','.join(NVIDIA_SMI_QUERY_FIELDS)}), got {len(parts)}"
            )
        index, name, uuid, total, driver, util, used = parts
        for field, value in (("name", name), ("uuid", uuid), ("driver_version", driver)):
            if not value or _unavailable(value):
                raise InvalidInput(f"nvidia-smi line {line!r}: {field} is missing")
        gpus.append(
            GpuInfo(
                _required_int(index, line, "index"),
                name,
                uuid,
                _required_int(total, line, "memory.total"),
                driver,
                cuda_version,
                _optional_int(util, line, "utilization.gpu"),
                _optional_int(used, line, "memory.used"),
            )
        )
    return gpus


def parse_nvidia_smi_cuda_version(text: str) -> str:
    """The "CUDA Version: 12.4" of plain ``nvidia-smi`` (or ``-q``) output; "" if absent."""
    match = _CUDA_VERSION.search(text)
    return match.group(1) if match else ""


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """CPU model and the interesting flags from ``/proc/cpuinfo`` text (first CPU only)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:  # a blank line ends the first processor block
                break
            continue
        fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("hardware") or fields.get("uarch") or ""
    if not model and "cpu implementer" in fields:
        implementer, part = fields["cpu implementer"], fields.get("cpu part", "?")
        model = _ARM_PARTS.get((implementer, part), f"ARM implementer {implementer} part {part}")
    present = set((fields.get("flags") or fields.get("features") or "").split())
    if "asimd" in present:  # aarch64 calls NEON "asimd"
        present.add("neon")
    return model, tuple(f for f in INTERESTING_CPU_FLAGS if f in present)


def architecture_of(machine: str) -> Architecture:
    """Map a ``platform.machine()`` string to :class:`Architecture`."""
    return _ARCHITECTURES.get(machine.lower(), Architecture.OTHER)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _memory_mib(root: Path) -> int:
    total = 0
    for line in _read(root / "proc/meminfo").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "MemTotal:" and words[1].isdigit():
            total = int(words[1]) // 1024  # the kernel reports kB
            break
    # A container sees the host's MemTotal; its real ceiling is the cgroup limit
    # (v2 memory.max, or v1 memory.limit_in_bytes). "max" or a huge value means none.
    for limit_file in ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        value = _read(root / limit_file).strip()
        if value.isdigit():
            limit = int(value) // (1024 * 1024)
            total = min(total, limit) if total else limit
    return total


def _cpu_cores(root: Path) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    # docker --cpus sets a CFS quota (cgroup v2 cpu.max "<quota> <period>"), not an affinity.
    quota, _, period = _read(root / "sys/fs/cgroup/cpu.max").strip().partition(" ")
    if quota.isdigit() and period.isdigit() and int(period) > 0:
        cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return max(1, cores)


def _os_name(root: Path) -> str:
    # os-release(5): /etc/os-release, falling back to /usr/lib/os-release.
    text = _read(root / "etc/os-release") or _read(root / "usr/lib/os-release")
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip("\"'")
    return ""


def default_run(command: list[str]) -> str | None:
    """Run ``command``; its stdout, or None if the tool is absent, fails or times out."""
    exe = shutil.which(command[0])
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *command[1:]], capture_output=True, text=True, errors="replace",
            timeout=RUN_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def probe_host(*, run: Runner | None = None, root: Path = Path("/")) -> HostProbe:
    """Probe this host: CPU, memory, OS, container runtimes and NVIDIA GPUs.

    ``run`` executes a command and returns its stdout or None (default :func:`default_run`);
    ``root`` is where ``/proc``, ``/etc`` and ``/sys`` are read from. Unreadable files give
    empty values; malformed ``nvidia-smi`` output raises :class:`InvalidInput`, because
    declaring wrong GPUs is worse than not starting.
    """
    runner = run or default_run
    cpu_model, cpu_flags = parse_cpuinfo(_read(root / "proc/cpuinfo"))
    gpus: tuple[GpuInfo, ...] = ()
    query = runner(NVIDIA_SMI_QUERY)
    if query is not None:
        cuda = parse_nvidia_smi_cuda_version(runner(NVIDIA_SMI_BANNER) or "")
        gpus = tuple(parse_nvidia_smi_csv(query, cuda_version=cuda))
    # Images really run with a runtime the pool declares: a docker/podman client counts only
    # when `info` works (a reachable daemon, a usable storage), not merely `--version`.
    runtimes = tuple(
        rt
        for rt in CONTAINER_RUNTIMES
        if runner([rt, "--version"]) is not None
        and (rt not in ("docker", "podman") or runner([rt, "info"]) is not None)
    )
    chosen = os.environ.get(RUNTIMES_ENV)
    if run is None and chosen is not None:
        # The operator narrows what this host declares (empty: run every image on the host).
        runtimes = tuple(rt for rt in runtimes if rt in chosen.split(","))
    return HostProbe(
        hostname=socket.gethostname(),
        architecture=architecture_of(platform.machine()),
        cpu_model=cpu_model,
        cpu_cores=_cpu_cores(root),
        cpu_flags=cpu_flags,
        memory_mib=_memory_mib(root),
        os=_os_name(root),
        container_runtimes=runtimes,
        gpus=gpus,
        accelerators=tuple(probe_accelerators(runner)),
    )


def _accelerator_model(name: str) -> str:
    from computenet.model.catalog import load_catalog  # lazy: only GPU hosts need the catalog

    info = load_catalog().resolve(name)
    if info is not None:
        return info.model
    slug = _NON_SLUG.sub("-", name.lower()).strip("-").removeprefix("nvidia-")
    return f"nvidia-unknown-{slug}"[:64].rstrip("-")


def _share(total: int, parts: int, i: int) -> int:
    base, extra = divmod(total, parts)
    return max(1, base + (1 if i < extra else 0))


def pools_from_probe(
    probe: HostProbe,
    *,
    label: str = "local",
    region: Region | None = None,
    price_per_card_hour: Decimal = Decimal(0),
    price_per_core_hour: Decimal = Decimal(0),
    cpu_cores: int | None = None,
) -> list[PoolSpec]:
    """Turn a probe into pool declarations for the local backend.

    One pool for the host, or one per accelerator model when models are mixed, labelled
    ``<label>-<model-short>``. ``cpu_cores`` overrides the probed core count (the whole host's,
    split like the probed one when there are several pools).
    """
    validate_label(label, "pool label")
    if probe.memory_mib < 1:
        raise InvalidInput("host memory could not be read from /proc/meminfo")
    cores = probe.cpu_cores if cpu_cores is None else cpu_cores
    if cores < 1:
        raise InvalidInput(f"cpu_cores must be at least 1, got {cores}")
    software = Software(os=probe.os[:128], container_runtimes=list(probe.container_runtimes))
    # Group by (vendor, catalog model), not raw name, so two spellings of one card make one
    # pool. Each member is (name as printed, memory MiB, driver, cuda).
    models = {name: _accelerator_model(name) for name in dict.fromkeys(g.name for g in probe.gpus)}
    by_model: dict[tuple[str, str], list[tuple[str, int, str, str]]] = {}
    for gpu in probe.gpus:
        member = (gpu.name, gpu.memory_mib, gpu.driver_version, gpu.cuda_version)
        by_model.setdefault(("nvidia", models[gpu.name]), []).append(member)
    for dev in probe.accelerators:
        member = (dev.name, dev.memory_mib, dev.driver_version, "")
        by_model.setdefault((dev.vendor, dev.model), []).append(member)
    groups = list(by_model.items()) or [(("", ""), [])]
    pools: list[PoolSpec] = []
    for i, ((vendor, model), group) in enumerate(groups):
        labels = {"cpu-flags": ",".join(probe.cpu_flags)} if probe.cpu_flags else {}
        accelerator, pool_label = None, label
        driver, cuda = (group[0][2], group[0][3]) if group else ("", "")
        if group:
            accelerator = Accelerator(
                vendor=vendor,
                model=model,
                memory_mib=min(member[1] for member in group),
                count=len(group),
            )
            labels["gpu-name"] = group[0][0]
            if len(groups) > 1:
                short = model.removeprefix(f"{vendor}-").removeprefix("unknown-")
                pool_label = f"{label}-{short}"[:63].rstrip("-")
        spec = PoolSpec(
            label=pool_label,
            backend="local",
            architecture=probe.architecture,
            cpu_model=probe.cpu_model[:128],
            # Mixed models share one host's CPUs and memory: each pool gets an even share
            # (never below 1), so together they do not promise more than the machine has.
            cpu_cores=_share(cores, len(groups), i),
            memory_mib=_share(probe.memory_mib, len(groups), i),
            accelerator=accelerator,
            software=software.model_copy(
                update={"driver": driver[:64], "cuda": cuda[:32]}, deep=True
            ),
            price_per_card_hour=price_per_card_hour,
            price_per_core_hour=price_per_core_hour,
            labels=labels,
        )
        if region is not None:
            spec = spec.model_copy(update={"region": region.model_copy(deep=True)})
        pools.append(spec)
    return pools


def gpu_indices(probe: HostProbe, pools: list[PoolSpec]) -> dict[str, list[int]]:
    """The GPU indices behind each pool of ``pools_from_probe``, by pool label."""
    out: dict[str, list[int]] = {}
    for pool in pools:
        if pool.accelerator is not None:
            vendor, model = pool.accelerator.vendor, pool.accelerator.model
            out[pool.label] = [
                g.index
                for g in probe.gpus
                if vendor == "nvidia" and _accelerator_model(g.name) == model
            ] + [d.index for d in probe.accelerators if (d.vendor, d.model) == (vendor, model)]
    return out
