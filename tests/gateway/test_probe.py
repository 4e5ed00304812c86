"""Host probing: parsers against recorded tool outputs, fixture roots, the real machine."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from computenet.errors import InvalidInput
from computenet.gateway.backends.containers import CONTAINER_RUNTIMES
from computenet.gateway.probe import (
    NVIDIA_SMI_BANNER,
    NVIDIA_SMI_QUERY,
    GpuInfo,
    HostProbe,
    architecture_of,
    parse_cpuinfo,
    parse_nvidia_smi_csv,
    parse_nvidia_smi_cuda_version,
    pools_from_probe,
    probe_host,
)
from computenet.model.pool import Architecture, PoolSpec, Region

FIXTURES = Path(__file__).parent / "fixtures"
SMI = FIXTURES / "nvidia-smi"
H100_UUIDS = (
    "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1",
    "GPU-7c3cadbd-17e5-0913-f69b-c618122ea0cd",
    "GPU-2d50cdf6-dd67-9f2e-855e-0d4d6d395a2f",
    "GPU-d1838e76-90e6-4408-711d-aeeaa2e1fd14",
    "GPU-72be6e5d-3c1b-0d37-98ac-d3ef159f2589",
    "GPU-52378fbc-3124-3895-13b6-1dd179563e0f",
    "GPU-83a5aebb-b71c-c570-aa83-185e1233fe97",
    "GPU-33135771-a848-ece1-b61e-489e221d663c",
)


def fake_run(
    outputs: dict[tuple[str, ...], str],
) -> tuple[Callable[[list[str]], str | None], list[list[str]]]:
    """A ``run`` that answers known commands from ``outputs`` and None otherwise."""
    calls: list[list[str]] = []

    def run(command: list[str]) -> str | None:
        calls.append(command)
        return outputs.get(tuple(command))

    return run, calls


def h100_run() -> tuple[Callable[[list[str]], str | None], list[list[str]]]:
    return fake_run(
        {
            tuple(NVIDIA_SMI_QUERY): (SMI / "query-8xh100.csv").read_text(),
            tuple(NVIDIA_SMI_BANNER): (SMI / "banner-8xh100.txt").read_text(),
            ("apptainer", "--version"): "apptainer version 1.3.4\n",
            ("docker", "--version"): "Docker version 27.3.1, build ce12230\n",
            ("docker", "info"): "Server Version: 27.3.1\n",
            ("podman", "--version"): "podman version 4.3.1\n",  # no `info`: not usable
        }
    )


BASE_PROBE = HostProbe(
    hostname="gpu-node-01",
    architecture=Architecture.X86_64,
    cpu_model="Intel(R) Xeon(R) Platinum 8488C",
    cpu_cores=192,
    cpu_flags=("avx", "avx2", "avx512f", "amx_tile"),
    memory_mib=2_063_852,
    os="Debian GNU/Linux 12 (bookworm)",
    container_runtimes=("apptainer", "docker"),
    gpus=(),
)


def probe(**overrides: Any) -> HostProbe:
    return dataclasses.replace(BASE_PROBE, **overrides)


# --- nvidia-smi parsing ---------------------------------------------------------------------


def test_query_command_uses_the_declared_fields() -> None:
    assert NVIDIA_SMI_QUERY == [
        "nvidia-smi",
        "--query-gpu=index,name,uuid,memory.total,driver_version,utilization.gpu,memory.used",
        "--format=csv,noheader,nounits",
    ]


def test_parse_8x_h100_recording() -> None:
    gpus = parse_nvidia_smi_csv((SMI / "query-8xh100.csv").read_text(), cuda_version="12.7")
    assert [g.index for g in gpus] == list(range(8))
    assert tuple(g.uuid for g in gpus) == H100_UUIDS
    assert gpus[0] == GpuInfo(
        index=0,
        name="NVIDIA H100 80GB HBM3",
        uuid=H100_UUIDS[0],
        memory_mib=81559,
        driver_version="565.57.01",
        cuda_version="12.7",
        utilization_pct=0,
        memory_used_mib=1,
    )
    assert {g.name for g in gpus} == {"NVIDIA H100 80GB HBM3"}


def test_parse_mixed_a100_t4() -> None:
    gpus = parse_nvidia_smi_csv((SMI / "query-mixed-a100-t4.csv").read_text())
    assert [(g.name, g.memory_mib) for g in gpus] == [
        ("NVIDIA A100-SXM4-80GB", 81920),
        ("NVIDIA A100-SXM4-80GB", 81920),
        ("Tesla T4", 15360),
    ]
    assert gpus[0].utilization_pct == 72 and gpus[0].memory_used_mib == 34447
    assert all(g.cuda_version == "" for g in gpus)


def test_unavailable_fields_become_none() -> None:
    gpus = parse_nvidia_smi_csv((SMI / "query-na-fields.csv").read_text())
    assert (gpus[0].utilization_pct, gpus[0].memory_used_mib) == (None, None)
    assert (gpus[1].utilization_pct, gpus[1].memory_used_mib) == (None, 0)
    # A bare N/A (older drivers) is understood too.
    (old,) = parse_nvidia_smi_csv("0, Tesla T4, GPU-1, 15360, 410.72, N/A, 0")
    assert old.utilization_pct is None


def test_blank_lines_and_empty_output() -> None:
    assert parse_nvidia_smi_csv("") == []
    assert len(parse_nvidia_smi_csv("\n0, Tesla T4, GPU-1, 15360, 535.1, 0, 0\n\n")) == 1


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("0, Tesla T4, GPU-1, 15360, 535.1, 0", "expected 7"),
        ("0, Tesla T4, GPU-1, 15360, 535.1, 0, 0, extra", "expected 7"),
        ("index, name, uuid, memory.total [MiB], driver_version, util, used", "index"),
        ("0, Tesla T4, GPU-1, [N/A], 535.1, 0, 0", "memory.total"),
        ("0, Tesla T4, GPU-1, 15360, 535.1, busy, 0", "utilization.gpu"),
        ("0, , GPU-1, 15360, 535.1, 0, 0", "name is missing"),
        ("NVIDIA-SMI has failed because it couldn't communicate with the driver", "expected 7"),
    ],
)
def test_malformed_line_raises_with_the_line_quoted(line: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_nvidia_smi_csv("0, Tesla T4, GPU-0, 15360, 535.1, 0, 0\n" + line)
    assert reason in err.value.message
    assert repr(line) in err.value.message


def test_cuda_version_from_banner() -> None:
    banner = (SMI / "banner-8xh100.txt").read_text()
    assert parse_nvidia_smi_cuda_version(banner) == "12.7"
    assert (
        parse_nvidia_smi_cuda_version("CUDA Version                              : 12.4") == "12.4"
    )
    assert parse_nvidia_smi_cuda_version("no banner here") == ""


# --- /proc and /etc parsing -----------------------------------------------------------------


def test_cpuinfo_x86_with_avx512_and_amx() -> None:
    model, flags = parse_cpuinfo((FIXTURES / "host-x86/proc/cpuinfo").read_text())
    assert model == "Intel(R) Xeon(R) Platinum 8488C"
    assert flags == (
        "avx",
        "avx2",
        "avx512f",
        "avx512_bf16",
        "avx512_fp16",
        "avx512_vnni",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    )


def test_cpuinfo_aarch64_falls_back_to_implementer_and_part() -> None:
    model, flags = parse_cpuinfo((FIXTURES / "host-aarch64/proc/cpuinfo").read_text())
    assert model == "ARM Neoverse-N1"
    assert flags == ("neon",)
    unknown, _ = parse_cpuinfo("processor\t: 0\nCPU implementer\t: 0x99\nCPU part\t: 0x123\n")
    assert unknown == "ARM implementer 0x99 part 0x123"


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", Architecture.X86_64),
        ("AMD64", Architecture.X86_64),
        ("aarch64", Architecture.AARCH64),
        ("arm64", Architecture.AARCH64),
        ("riscv64", Architecture.RISCV64),
        ("ppc64le", Architecture.OTHER),
    ],
)
def test_architecture_mapping(machine: str, arch: Architecture) -> None:
    assert architecture_of(machine) is arch


# --- probe_host -----------------------------------------------------------------------------


def test_probe_fixture_root_with_recorded_nvidia_smi() -> None:
    run, calls = h100_run()
    host = probe_host(run=run, root=FIXTURES / "host-x86")
    assert host.cpu_model == "Intel(R) Xeon(R) Platinum 8488C"
    assert "amx_tile" in host.cpu_flags and "avx512f" in host.cpu_flags
    assert host.memory_mib == 2113384500 // 1024
    assert host.os == "Debian GNU/Linux 12 (bookworm)"
    assert host.container_runtimes == ("apptainer", "docker")
    assert len(host.gpus) == 8
    assert {g.cuda_version for g in host.gpus} == {"12.7"}
    assert {g.driver_version for g in host.gpus} == {"565.57.01"}
    assert NVIDIA_SMI_QUERY in calls
    # cpu.max in the fixture is "max": the affinity mask decides.
    assert host.cpu_cores == len(os.sched_getaffinity(0))


def test_probe_without_nvidia_smi_has_no_gpus() -> None:
    run, calls = fake_run({})
    host = probe_host(run=run, root=FIXTURES / "host-x86")
    assert host.gpus == ()
    assert host.container_runtimes == ()
    assert NVIDIA_SMI_BANNER not in calls  # no banner is asked for when the query failed


def test_probe_malformed_nvidia_smi_raises() -> None:
    run, _ = fake_run({tuple(NVIDIA_SMI_QUERY): "0, Tesla T4, GPU-1\n"})
    with pytest.raises(InvalidInput):
        probe_host(run=run, root=FIXTURES / "host-x86")


def test_probe_respects_cgroup_limits(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "host-x86", tmp_path, dirs_exist_ok=True)
    cgroup = tmp_path / "sys/fs/cgroup"
    (cgroup / "memory.max").write_text(f"{64 * 1024**3}\n")  # 64 GiB container
    (cgroup / "cpu.max").write_text("100000 100000\n")  # docker --cpus=1
    host = probe_host(run=fake_run({})[0], root=tmp_path)
    assert host.memory_mib == 64 * 1024
    assert host.cpu_cores == 1
    # A limit above the machine's memory changes nothing.
    (cgroup / "memory.max").write_text(f"{8 * 1024**4}\n")
    assert probe_host(run=fake_run({})[0], root=tmp_path).memory_mib == 2113384500 // 1024


def test_probe_empty_root_gives_empty_values(tmp_path: Path) -> None:
    host = probe_host(run=fake_run({})[0], root=tmp_path)
    assert (host.cpu_model, host.cpu_flags, host.memory_mib, host.os) == ("", (), 0, "")
    assert host.cpu_cores >= 1
    with pytest.raises(InvalidInput, match="memory"):
        pools_from_probe(host)


def test_probe_the_real_machine() -> None:
    # The default runner must cope with nvidia-smi being absent (the development machine
    # has no GPU); where it is present, it must find at least one GPU.
    host = probe_host()
    if shutil.which("nvidia-smi") is None:
        assert host.gpus == ()
    assert host.cpu_cores >= 1
    assert host.memory_mib > 0
    assert host.hostname
    assert isinstance(host.architecture, Architecture)
    assert set(host.container_runtimes) <= set(CONTAINER_RUNTIMES)
    pools = pools_from_probe(host)
    assert pools and all(p.cpu_cores >= 1 for p in pools)
    assert (pools[0].accelerator is None) == (host.gpus == ())


# --- pools_from_probe -----------------------------------------------------------------------


def test_pool_for_a_cpu_only_host() -> None:
    (pool,) = pools_from_probe(probe(), price_per_core_hour=Decimal("0.05"))
    assert isinstance(pool, PoolSpec)
    assert pool.label == "local" and pool.backend == "local"
    assert pool.accelerator is None
    assert (pool.cpu_cores, pool.memory_mib) == (192, 2_063_852)
    assert pool.architecture is Architecture.X86_64
    assert pool.cpu_model == "Intel(R) Xeon(R) Platinum 8488C"
    assert pool.software.os == "Debian GNU/Linux 12 (bookworm)"
    assert (pool.software.driver, pool.software.cuda) == ("", "")
    assert pool.software.container_runtimes == ["apptainer", "docker"]
    assert pool.price_per_core_hour == Decimal("0.05")
    assert pool.labels == {"cpu-flags": "avx,avx2,avx512f,amx_tile"}


def test_pool_for_8x_h100_uses_the_catalog_id() -> None:
    run, _ = h100_run()
    host = probe_host(run=run, root=FIXTURES / "host-x86")
    region = Region(code="310115", name="Shanghai Pudong")
    (pool,) = pools_from_probe(
        host, label="h100", region=region, price_per_card_hour=Decimal("18.5")
    )
    assert pool.label == "h100"
    assert pool.accelerator is not None
    assert pool.accelerator.vendor == "nvidia"
    assert pool.accelerator.model == "nvidia-h100-sxm"
    assert pool.accelerator.count == 8
    assert pool.accelerator.memory_mib == 81559
    assert (pool.software.driver, pool.software.cuda) == ("565.57.01", "12.7")
    assert pool.region == region
    assert pool.price_per_card_hour == Decimal("18.5")
    assert pool.labels["gpu-name"] == "NVIDIA H100 80GB HBM3"
    assert pool.total().accelerators == 8


def test_pools_for_mixed_gpus_split_the_host() -> None:
    gpus = tuple(parse_nvidia_smi_csv((SMI / "query-mixed-a100-t4.csv").read_text()))
    pools = pools_from_probe(probe(gpus=gpus, cpu_cores=63, memory_mib=1001), label="mix")
    assert [p.label for p in pools] == ["mix-a100-sxm-80g", "mix-t4"]
    a100, t4 = (p.accelerator for p in pools)
    assert a100 is not None and t4 is not None
    assert (a100.model, a100.count, a100.memory_mib) == ("nvidia-a100-sxm-80g", 2, 81920)
    assert (t4.model, t4.count, t4.memory_mib) == ("nvidia-t4", 1, 15360)
    # Shared CPUs and memory are split evenly and never add up to more than the host has.
    assert [p.cpu_cores for p in pools] == [32, 31]
    assert sum(p.memory_mib for p in pools) == 1001
    assert pools[0].software is not pools[1].software


def test_unknown_gpu_gets_a_slug_model_id() -> None:
    gpu = GpuInfo(0, "NVIDIA GeForce RTX 4090", "GPU-x", 24564, "550.90.07")
    (pool,) = pools_from_probe(probe(gpus=(gpu,)))
    assert pool.accelerator is not None
    assert pool.accelerator.model == "nvidia-unknown-geforce-rtx-4090"


def test_cpu_cores_override() -> None:
    (pool,) = pools_from_probe(probe(), cpu_cores=96)
    assert pool.cpu_cores == 96
    with pytest.raises(InvalidInput, match="cpu_cores"):
        pools_from_probe(probe(), cpu_cores=0)


def test_bad_label_is_refused() -> None:
    with pytest.raises(InvalidInput, match="pool label"):
        pools_from_probe(probe(), label="Not A Label")
