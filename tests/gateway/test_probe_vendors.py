"""Huawei Ascend, Cambricon and Hygon probing: recorded outputs, malformed ones, absent tools."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from computenet.errors import InvalidInput
from computenet.gateway.probe_vendors import (
    CNMON,
    HY_SMI_QUERY,
    NPU_SMI_INFO,
    ROCM_SMI_QUERY,
    VISIBLE_DEVICES_ENV,
    AcceleratorDevice,
    catalog_model,
    group_by_model,
    parse_cnmon,
    parse_dcu_smi,
    parse_npu_smi_info,
    probe_accelerators,
)

FIXTURES = Path(__file__).parent / "fixtures"
NPU = FIXTURES / "npu-smi"
CNMON_DIR = FIXTURES / "cnmon"
HY = FIXTURES / "hy-smi"
ROCM = FIXTURES / "rocm-smi"

Parser = Callable[[str], list[AcceleratorDevice]]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def summary(devices: list[AcceleratorDevice]) -> list[tuple[int, str, str, int]]:
    return [(d.index, d.name, d.model, d.memory_mib) for d in devices]


def fake_run(
    outputs: dict[tuple[str, ...], str],
) -> tuple[Callable[[list[str]], str | None], list[list[str]]]:
    """A ``run`` that answers known commands from ``outputs`` and None (tool absent) otherwise."""
    calls: list[list[str]] = []

    def run(command: list[str]) -> str | None:
        calls.append(command)
        return outputs.get(tuple(command))

    return run, calls


def test_commands() -> None:
    assert NPU_SMI_INFO == ["npu-smi", "info"]
    assert CNMON == ["cnmon"]
    assert HY_SMI_QUERY == ["hy-smi", "--showproductname", "--showmeminfo", "vram", "--json"]
    assert ROCM_SMI_QUERY[1:] == HY_SMI_QUERY[1:]
    assert VISIBLE_DEVICES_ENV["huawei"] == "ASCEND_RT_VISIBLE_DEVICES"
    assert VISIBLE_DEVICES_ENV["cambricon"] == "MLU_VISIBLE_DEVICES"
    assert set(VISIBLE_DEVICES_ENV) == {"nvidia", "huawei", "cambricon", "hygon"}


# --- every fixture parses to the expected devices -------------------------------------------

EXPECTED: list[tuple[Path, Parser, str, list[tuple[int, str, str, int]]]] = [
    (
        NPU / "info-910b3.txt",
        parse_npu_smi_info,
        "",  # this recording starts at the table; the banner with the version was not pasted
        [(i, "910B3", "huawei-ascend-910b3", 65536) for i in range(3)],
    ),
    (
        NPU / "info-910b4.txt",
        parse_npu_smi_info,
        "24.1.1",
        [(i, "910B4", "huawei-ascend-910b4", 32768) for i in range(2)],
    ),
    (
        NPU / "info-910b4-1.txt",
        parse_npu_smi_info,
        "25.2.0",
        [(i, "910B4-1", "huawei-ascend-910b4-1", 65536) for i in range(2)],
    ),
    (
        NPU / "info-310p3-duo.txt",
        parse_npu_smi_info,
        "24.1.rc2",
        [(0, "310P3", "huawei-ascend-310p", 44280), (1, "310P3", "huawei-ascend-310p", 43693)],
    ),
    (
        NPU / "info-a3-ascend910.txt",
        parse_npu_smi_info,
        "26.0.rc2",
        [(i, "Ascend910", "huawei-unknown-ascend910", 65536) for i in range(3)],
    ),
    (
        NPU / "info-910-ddr-hbm.txt",
        parse_npu_smi_info,
        "24.1.RC2",
        [(i, "xxx", "huawei-unknown-xxx", 32768) for i in range(4)],
    ),
    (
        CNMON_DIR / "summary-2xmlu370-x8-v5.10.13.txt",
        parse_cnmon,
        "5.10.13",
        [(i, "MLU370-X8", "cambricon-mlu370-x8", 23374) for i in range(2)],
    ),
    (
        CNMON_DIR / "summary-3xmlu370-x4-v4.20.11.txt",
        parse_cnmon,
        "4.20.11",
        [(i, "MLU370-X4", "cambricon-unknown-mlu370-x4", 23308) for i in range(3)],
    ),
    (
        HY / "json-k100-ai.json",
        parse_dcu_smi,
        "",
        [(i, "K100_AI", "hygon-k100-ai", 65520) for i in range(2)],
    ),
    (
        HY / "text-2xz100l.txt",
        parse_dcu_smi,
        "",
        [(i, "Z100L", "hygon-unknown-z100l", 32752) for i in range(2)],
    ),
    (
        ROCM / "json-k100-ai-c3000.json",
        lambda text: parse_dcu_smi(text, tool="rocm-smi", hygon_only=True),
        "",
        [(0, "K100_AI", "hygon-k100-ai", 65520)],
    ),
]


@pytest.mark.parametrize(
    ("path", "parser", "driver", "expected"),
    EXPECTED,
    ids=[f"{p.parent.name}/{p.name}" for p, *_ in EXPECTED],
)
def test_fixture_parses_to_expected_devices(
    path: Path, parser: Parser, driver: str, expected: list[tuple[int, str, str, int]]
) -> None:
    devices = parser(read(path))
    assert summary(devices) == expected
    assert {d.driver_version for d in devices} == {driver}
    vendor = {"npu-smi": "huawei", "cnmon": "cambricon"}.get(path.parent.name, "hygon")
    assert {d.vendor for d in devices} == {vendor}


def test_npu_smi_bus_ids_and_redacted_ones_are_kept_as_printed() -> None:
    assert [d.bus_id for d in parse_npu_smi_info(read(NPU / "info-910b3.txt"))] == [
        "0000:C1:00.0",
        "0000:C2:00.0",
        "0000:81:00.0",
    ]
    # HAMi-WebUI#47 masked the bus ids; the bus id is informational, so that still parses.
    assert {d.bus_id for d in parse_npu_smi_info(read(NPU / "info-910b4-1.txt"))} == {
        "0000:xx:00.0"
    }


def test_npu_smi_prefers_hbm_over_ddr_and_ignores_the_process_table() -> None:
    # The 910 (Atlas 800 9010) prints DDR in Memory-Usage (15137) and HBM separately (32768).
    devices = parse_npu_smi_info(read(NPU / "info-910-ddr-hbm.txt"))
    assert {d.memory_mib for d in devices} == {32768}
    assert len(devices) == 4  # the process rows below the table are not devices


def test_npu_smi_a3_lists_each_die_as_a_device() -> None:
    devices = parse_npu_smi_info(read(NPU / "info-a3-ascend910.txt"))
    assert [d.bus_id for d in devices] == ["0000:9D:00.0", "0000:9F:00.0", "0000:83:00.0"]


def test_cnmon_bus_id_only_in_the_5x_layout() -> None:
    x8 = parse_cnmon(read(CNMON_DIR / "summary-2xmlu370-x8-v5.10.13.txt"))
    assert [d.bus_id for d in x8] == ["0000:39:00.0", "0000:3D:00.0"]
    x4 = parse_cnmon(read(CNMON_DIR / "summary-3xmlu370-x4-v4.20.11.txt"))
    assert {d.bus_id for d in x4} == {""}  # CNMON 4.x shows "Inited Driver" there instead


def test_dcu_json_with_surrounding_noise_and_a_driver_version() -> None:
    cards = json.loads(read(HY / "json-k100-ai.json"))
    text = "WARNING: something hy-smi printed\n" + json.dumps(
        {**cards, "system": {"Driver version": "6.3.13-V1.12.0"}, "note": "not a card"}
    ) + "\n=== End of SMI Log ===\n"  # fmt: skip
    devices = parse_dcu_smi(text)
    assert [d.driver_version for d in devices] == ["6.3.13-V1.12.0"] * 2


def test_dcu_text_driver_line_and_vendor_filter() -> None:
    text = "Driver Version: 6.2.26\n" + read(HY / "text-2xz100l.txt")
    devices = parse_dcu_smi(text, tool="rocm-smi", hygon_only=True)
    assert [(d.index, d.driver_version) for d in devices] == [(0, "6.2.26"), (1, "6.2.26")]
    amd_text = "GPU[0]          : Card Series:   Instinct MI210\n"
    amd_text += "GPU[0]          : Card Vendor:   Advanced Micro Devices, Inc. [AMD/ATI]\n"
    assert parse_dcu_smi(amd_text, tool="rocm-smi", hygon_only=True) == []


def test_dcu_amd_cards_are_skipped_only_when_hygon_only() -> None:
    amd = read(ROCM / "json-amd-navi32.json")
    assert parse_dcu_smi(amd, tool="rocm-smi", hygon_only=True) == []
    # Unfiltered, the byte figure is converted to MiB (17163091968 B = 16368 MiB).
    (card,) = parse_dcu_smi(amd, tool="rocm-smi")
    assert card.memory_mib == 16368


def test_dcu_empty_card_series_becomes_vendor_unknown() -> None:
    text = json.dumps({"card0": {"Card Series": "", "vram Total Memory (MiB)": "65520"}})
    (card,) = parse_dcu_smi(text)
    assert (card.name, card.model, card.memory_mib) == ("", "hygon-unknown", 65520)


# --- catalog mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "name", "model"),
    [
        ("huawei", "910B3", "huawei-ascend-910b3"),
        ("huawei", "Ascend910B3", "huawei-ascend-910b3"),
        ("huawei", " 910B3 ", "huawei-ascend-910b3"),
        ("huawei", "910B4-1", "huawei-ascend-910b4-1"),
        ("huawei", "310P3", "huawei-ascend-310p"),
        ("huawei", "Ascend910", "huawei-unknown-ascend910"),  # A3: not the 910A
        ("cambricon", "MLU370-X8", "cambricon-mlu370-x8"),
        ("cambricon", "MLU590-M9", "cambricon-unknown-mlu590-m9"),
        ("hygon", "K100_AI", "hygon-k100-ai"),
        ("hygon", "K100", "hygon-k100"),
        ("hygon", "Z100L", "hygon-unknown-z100l"),
        ("hygon", "T4", "hygon-unknown-t4"),  # another vendor's catalog name is not trusted
        ("hygon", "", "hygon-unknown"),
    ],
)
def test_catalog_model(vendor: str, name: str, model: str) -> None:
    assert catalog_model(vendor, name) == model


def test_unknown_ids_are_bounded() -> None:
    model = catalog_model("huawei", "x" * 200)
    assert model.startswith("huawei-unknown-") and len(model) == 64


# --- malformed and empty output -------------------------------------------------------------


def first_lines(path: Path, count: int) -> str:
    return "\n".join(read(path).splitlines()[:count]) + "\n"


def npu_rows(name_row: str, chip_row: str) -> str:
    """The 910B3 recording's header with one made-up chip block under it."""
    return first_lines(NPU / "info-910b3.txt", 4) + f"{name_row}\n{chip_row}\n"


def cnmon_rows(card_row: str, stats_row: str) -> str:
    """The MLU370-X8 recording's header with one made-up card block under it."""
    return first_lines(CNMON_X8, 6) + f"{card_row}\n{stats_row}\n"


CNMON_X8 = CNMON_DIR / "summary-2xmlu370-x8-v5.10.13.txt"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "npu-smi info printed nothing"),
        ("  \n\n", "printed nothing"),
        (
            "dcmi model initialized failed, because the device is used. ret is -8020\n",
            "no table header found (first line 'dcmi model",
        ),
        (first_lines(NPU / "info-910b3.txt", 2), "lacks its second line"),
        (first_lines(NPU / "info-910b3.txt", 5), "'| 0     910B3               | OK"),
        (first_lines(NPU / "info-910b3.txt", 6) + "| 0 | 0000:C1:00.0 | 0 |\n", "more rows"),
        (npu_rows("| x  910B3 | OK | 1 |", "| 0 | 0000:C1:00.0 | 0 0 / 0 1 / 2 |"), "NPU id"),
        (npu_rows("| 0 910B3 | OK | 1 |", "| z | 0000:C1:00.0 | 0 0 / 0 1 / 2 |"), "chip id"),
        (npu_rows("| 0 910B3 | OK | 1 |", "| 0 | 0000:C1:00.0 | 0 0 / 0 |"), "'used / total'"),
        (npu_rows("| 0 910B3 | OK | 1 |", "| 0 0 | 0000:C1:00.0 | 0 0/0 1/2 |"), "1 id(s)"),
        (npu_rows("| 0 | OK | 1 |", "| 0 | 0000:C1:00.0 | 0 0/0 1/2 |"), "<npu> <name>"),
    ],
    ids=[
        "empty", "blank", "error-text", "no-chip-header", "truncated-after-name-row",
        "three-rows", "bad-npu-id", "bad-chip-id", "missing-hbm", "extra-id", "no-name",
    ],
)  # fmt: skip
def test_npu_smi_malformed(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match="npu-smi info") as caught:
        parse_npu_smi_info(text)
    assert message in str(caught.value)


def test_npu_smi_table_without_devices_is_empty() -> None:
    assert parse_npu_smi_info(first_lines(NPU / "info-910b4.txt", 6)) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cnmon printed nothing"),
        ("Error: No MLU device found\n", "no table header found (first line 'Error"),
        (first_lines(CNMON_X8, 4), "lacks its second line"),
        (first_lines(CNMON_X8, 7), "alone"),
        (read(CNMON_DIR / "summary-redacted-memory.txt"), "0 MiB/ xxxxx MiB"),
        (cnmon_rows("| A / MLU370-X8 v1.1.6 | 0 |", "| 0% | 0 MiB/ 1 MiB |"), "card number"),
        (cnmon_rows("| 0 MLU370-X8 | 0000:39:00.0 | 0% |", "| 0% | 0 MiB/ 1 MiB |"), "<card> <vf>"),
        (cnmon_rows("| 0 / MLU370-X8 v1.1.6 | 0000:39:00.0 |", "| 0% 32C |"), "MiB/"),
    ],
    ids=[
        "empty", "error-text", "no-memory-header", "truncated-after-card-row", "redacted",
        "bad-card-number", "too-few-words", "no-memory-cell",
    ],
)  # fmt: skip
def test_cnmon_malformed(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match="cnmon") as caught:
        parse_cnmon(text)
    assert message in str(caught.value)


def test_cnmon_table_without_cards_is_empty() -> None:
    assert parse_cnmon(first_lines(CNMON_X8, 6) + "+---+\n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "hy-smi printed nothing"),
        ("{not json", "not valid JSON"),
        ('{"card0": {"Card Series": "K100_AI"', "not valid JSON"),
        ("[1, 2]", "no 'DCU[N] : ...' lines"),  # no object at all, so read as text
        ('{"card0": "K100_AI"}', "'card0' is not an object"),
        ('{"card0": {"Card Series": "K100_AI"}}', "card0: no 'vram Total Memory'"),
        ('{"card3": {"vram Total Memory (MiB)": "64 GB"}}', "card3: vram Total Memory '64 GB'"),
        (read(HY / "productname-empty-series.txt"), "card0: no 'vram Total Memory'"),
        ("HIP Library Path: /opt/dtk\nsegmentation fault\n", "no 'DCU[N] : ...' lines"),
        ("DCU[0]          : Card Series K100\n", "expected '<field>: <value>'"),
    ],
    ids=[
        "empty", "garbage-json", "truncated-json", "json-list", "card-not-object",
        "no-memory", "memory-not-number", "productname-only", "garbage-text", "text-no-colon",
    ],
)  # fmt: skip
def test_dcu_malformed(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match="hy-smi") as caught:
        parse_dcu_smi(text)
    assert message in str(caught.value)


# --- probing through run ----------------------------------------------------------------------


def test_absent_tools_give_no_devices() -> None:
    run, calls = fake_run({})
    assert probe_accelerators(run) == []
    assert calls == [NPU_SMI_INFO, CNMON, HY_SMI_QUERY, ROCM_SMI_QUERY]


def test_probe_collects_every_vendor() -> None:
    run, calls = fake_run(
        {
            tuple(NPU_SMI_INFO): read(NPU / "info-910b3.txt"),
            tuple(CNMON): read(CNMON_X8),
            tuple(HY_SMI_QUERY): read(HY / "json-k100-ai.json"),
            tuple(ROCM_SMI_QUERY): read(ROCM / "json-k100-ai-c3000.json"),
        }
    )
    devices = probe_accelerators(run)
    assert [(d.vendor, d.model) for d in devices] == (
        [("huawei", "huawei-ascend-910b3")] * 3
        + [("cambricon", "cambricon-mlu370-x8")] * 2
        + [("hygon", "hygon-k100-ai")] * 2
    )
    assert ROCM_SMI_QUERY not in calls  # hy-smi answered, so rocm-smi is not asked


def test_rocm_smi_is_the_fallback_for_hygon() -> None:
    run, _ = fake_run({tuple(ROCM_SMI_QUERY): read(ROCM / "json-k100-ai-c3000.json")})
    assert summary(probe_accelerators(run)) == [(0, "K100_AI", "hygon-k100-ai", 65520)]


@pytest.mark.parametrize(
    "amd_output",
    [
        read(ROCM / "json-amd-navi32.json"),
        "ERROR: GPU[0]\t\t: Unable to get GPU memory use.\n",  # not JSON and not Hygon
    ],
    ids=["amd-json", "amd-error-text"],
)
def test_rocm_smi_on_an_amd_host_is_neither_misread_nor_refused(amd_output: str) -> None:
    run, _ = fake_run({tuple(ROCM_SMI_QUERY): amd_output})
    assert probe_accelerators(run) == []


def test_malformed_vendor_output_stops_the_probe() -> None:
    run, _ = fake_run({tuple(NPU_SMI_INFO): first_lines(NPU / "info-910b3.txt", 5)})
    with pytest.raises(InvalidInput, match="npu-smi info"):
        probe_accelerators(run)


def test_group_by_model_keeps_vendors_and_models_apart() -> None:
    devices = [
        *parse_npu_smi_info(read(NPU / "info-910b3.txt")),
        *parse_npu_smi_info(read(NPU / "info-310p3-duo.txt")),
        *parse_cnmon(read(CNMON_X8)),
    ]
    groups = group_by_model(devices)
    assert {key: [d.index for d in group] for key, group in groups.items()} == {
        ("huawei", "huawei-ascend-910b3"): [0, 1, 2],
        ("huawei", "huawei-ascend-310p"): [0, 1],
        ("cambricon", "cambricon-mlu370-x8"): [0, 1],
    }
