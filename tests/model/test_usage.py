"""Normalized compute: exact Decimal card-hours and PFLOPS-hours."""

from __future__ import annotations

from decimal import Decimal

import pytest

from computenet.errors import InvalidInput
from computenet.model.catalog import parse_catalog
from computenet.model.usage import PLACES, Usage, measure_usage


def test_two_h100_for_half_an_hour() -> None:
    usage = measure_usage(
        wall_s=Decimal(1800),
        cards=2,
        accelerator_model="nvidia-h100-sxm",
        cpu_cores=16,
        memory_mib=65536,
    )
    assert usage == Usage(
        accelerator_model="nvidia-h100-sxm",
        cards=2,
        wall_s=Decimal("1800.000000000"),
        card_hours=Decimal("1.000000000"),
        cpu_core_hours=Decimal("8.000000000"),
        memory_gib_hours=Decimal("32.000000000"),
        pflops_hours_fp16=Decimal("0.989000000"),
    )
    assert usage.pflops_hours_fp16 == Decimal("0.989")


def test_results_have_fixed_places() -> None:
    usage = measure_usage(
        wall_s=1, cards=1, accelerator_model="nvidia-t4", cpu_cores=1, memory_mib=1
    )
    for value in (usage.card_hours, usage.cpu_core_hours, usage.memory_gib_hours):
        assert value.as_tuple().exponent == -PLACES
    # 1 s of one T4 (65 TFLOPS): 65 / 3600 / 1000 PFLOPS-h, rounded half-even.
    assert usage.card_hours == Decimal("0.000277778")
    assert usage.pflops_hours_fp16 == Decimal("0.000018056")


def test_float_wall_time_is_taken_at_face_value() -> None:
    usage = measure_usage(
        wall_s=0.1, cards=1, accelerator_model="nvidia-t4", cpu_cores=0, memory_mib=0
    )
    assert usage.wall_s == Decimal("0.1")


def test_same_inputs_same_digits() -> None:
    args = {
        "wall_s": Decimal("1234.5678"),
        "cards": 3,
        "accelerator_model": "nvidia-a100-sxm-80g",
        "cpu_cores": 7,
        "memory_mib": 1000,
    }
    assert measure_usage(**args) == measure_usage(**args)  # type: ignore[arg-type]


def test_measured_figure_overrides_catalog() -> None:
    usage = measure_usage(
        wall_s=Decimal(3600),
        cards=1,
        accelerator_model="nvidia-h100-sxm",
        cpu_cores=0,
        memory_mib=0,
        measured_fp16_tflops=Decimal("700.5"),
    )
    assert usage.pflops_hours_fp16 == Decimal("0.7005")


def test_measured_figure_fills_a_catalog_gap() -> None:
    usage = measure_usage(
        wall_s=Decimal(7200),
        cards=8,
        accelerator_model="huawei-ascend-910b3",
        cpu_cores=0,
        memory_mib=0,
        measured_fp16_tflops=Decimal(250),
    )
    assert usage.card_hours == Decimal(16)
    assert usage.pflops_hours_fp16 == Decimal(4)


def test_unknown_fp16_gives_no_pflops_hours() -> None:
    usage = measure_usage(
        wall_s=Decimal(3600),
        cards=8,
        accelerator_model="huawei-ascend-910b3",
        cpu_cores=0,
        memory_mib=0,
    )
    assert usage.card_hours == Decimal(8)
    assert usage.pflops_hours_fp16 is None


def test_cpu_only_work() -> None:
    usage = measure_usage(
        wall_s=Decimal(5400), cards=0, accelerator_model=None, cpu_cores=4, memory_mib=2048
    )
    assert usage.card_hours == 0
    assert usage.cpu_core_hours == Decimal(6)
    assert usage.memory_gib_hours == Decimal(3)
    assert usage.pflops_hours_fp16 is None


def test_cpu_generic_model_gives_no_pflops_hours() -> None:
    usage = measure_usage(
        wall_s=Decimal(60), cards=0, accelerator_model="cpu-generic", cpu_cores=1, memory_mib=0
    )
    assert usage.pflops_hours_fp16 is None


def test_custom_catalog_is_used() -> None:
    header = "model,vendor,name,aliases,memory_gib,fp16_dense_tflops,bf16_dense_tflops,fp64_tflops"
    catalog = parse_catalog(f"{header},source,notes\nx-1,nvidia,X,,,100,,,test,\n")
    usage = measure_usage(
        wall_s=Decimal(36),
        cards=1,
        accelerator_model="x-1",
        cpu_cores=0,
        memory_mib=0,
        catalog=catalog,
    )
    assert usage.pflops_hours_fp16 == Decimal("0.001")


def test_model_outside_catalog_bills_card_hours_without_pflops() -> None:
    # A gateway may declare a card the catalog lacks; it is still billed by the card-hour.
    usage = measure_usage(
        wall_s=Decimal(3600),
        cards=2,
        accelerator_model="nvidia-unknown-x",
        cpu_cores=0,
        memory_mib=0,
    )
    assert usage.card_hours == Decimal(2)
    assert usage.pflops_hours_fp16 is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"wall_s": Decimal(-1)},
        {"wall_s": -0.5},
        {"wall_s": Decimal("NaN")},
        {"wall_s": float("inf")},
        {"wall_s": "60"},
        {"wall_s": Decimal("1e100")},
        {"cards": -1},
        {"cards": True},
        {"cpu_cores": -2},
        {"memory_mib": -1},
        {"memory_mib": 1.5},
        {"measured_fp16_tflops": Decimal(-10)},
        {"measured_fp16_tflops": Decimal(0)},
    ],
)
def test_bad_input_is_refused(overrides: dict[str, object]) -> None:
    args: dict[str, object] = {
        "wall_s": Decimal(60),
        "cards": 1,
        "accelerator_model": "nvidia-t4",
        "cpu_cores": 1,
        "memory_mib": 1024,
    }
    args.update(overrides)
    with pytest.raises(InvalidInput):
        measure_usage(**args)  # type: ignore[arg-type]


def test_cards_without_a_model_are_refused() -> None:
    with pytest.raises(InvalidInput, match="no accelerator model"):
        measure_usage(
            wall_s=Decimal(60), cards=2, accelerator_model=None, cpu_cores=1, memory_mib=0
        )


def test_measured_figure_without_a_model_is_refused() -> None:
    with pytest.raises(InvalidInput, match="needs an accelerator model"):
        measure_usage(
            wall_s=Decimal(60),
            cards=0,
            accelerator_model=None,
            cpu_cores=1,
            memory_mib=0,
            measured_fp16_tflops=Decimal(100),
        )


def test_unsure_catalog_figure_bills_no_pflops_hours() -> None:
    # A800's FP16 is derived from the A100's (UNSURE in the catalog): card-hours only,
    # until a gateway measures the pool.
    usage = measure_usage(
        wall_s=Decimal(3600),
        cards=1,
        accelerator_model="nvidia-a800-sxm-80g",
        cpu_cores=0,
        memory_mib=0,
    )
    assert usage.card_hours == Decimal(1)
    assert usage.pflops_hours_fp16 is None
