"""Measured throughput: real NumPy on this CPU, a fake torch for the GPU path, formatting."""

from __future__ import annotations

import math
import sys
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from computenet.errors import InvalidInput, Unavailable
from computenet.gateway.measure import (
    MIN_SIZE,
    Throughput,
    compare,
    fit_size,
    measure_cpu,
    measure_gpu,
    significant,
)

# ---- CPU, with the real NumPy --------------------------------------------------------------


def _positive_finite(value: Decimal | None) -> bool:
    return value is not None and value.is_finite() and value > 0


def test_cpu_measures_fp64_and_fp32_within_budget() -> None:
    t = measure_cpu(size=256, repeats=2, budget_s=5.0)
    assert _positive_finite(t.fp64_tflops)
    assert _positive_finite(t.fp32_tflops)
    assert t.fp16_tflops is None
    assert t.device.startswith("cpu: ")
    assert "numpy" in t.method and "256x256" in t.method and "shrunk" not in t.method
    assert 0 < t.seconds <= 5.0


def test_cpu_shrinks_a_size_that_does_not_fit_the_budget() -> None:
    # 8192^3 * 2 = 1.1 TFLOP per product: minutes on a small machine, and too much for
    # 16 products in 1.5 s on any CPU this runs on.
    t = measure_cpu(size=8192, repeats=2, budget_s=1.5)
    assert "asked 8192, shrunk to fit 1.5 s" in t.method
    assert _positive_finite(t.fp64_tflops) and _positive_finite(t.fp32_tflops)
    # The budget may be overrun by about one product; allow for a loaded test machine.
    assert t.seconds < 3.0


@pytest.mark.parametrize(
    "kwargs",
    [{"size": 0}, {"repeats": 0}, {"budget_s": 0.0}, {"budget_s": math.nan}, {"size": True}],
)
def test_cpu_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        measure_cpu(**kwargs)


def test_fit_size() -> None:
    # 1 GFLOP/s for 1 s is 5e8 = n^3 -> n = 793, rounded down to a multiple of 64.
    assert fit_size(2048, 1e9, 1.0) == 768
    assert fit_size(512, 1e9, 1.0) == 512  # fits as asked
    assert fit_size(2048, 1e3, 1.0) == MIN_SIZE  # never below the floor
    assert fit_size(2048, 1e9, -1.0) == MIN_SIZE  # deadline already passed
    assert fit_size(32, 1.0, 1.0) == 32  # already below the floor: left alone


# ---- GPU, with a fake torch ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTensor:
    def __init__(self, shape: tuple[int, ...], dtype: str, device: str) -> None:
        self.shape, self.dtype, self.device = shape, dtype, device


class FakeCuda:
    def __init__(self, available: bool) -> None:
        self.available = available
        self.synchronized = 0
        self.emptied = False

    def is_available(self) -> bool:
        return self.available

    def get_device_name(self, index: int) -> str:
        assert index == 0
        return "Fake H100"

    def synchronize(self) -> None:
        self.synchronized += 1

    def empty_cache(self) -> None:
        self.emptied = True


class FakeTorch:
    """Just what measure_gpu calls: each matmul advances the clock by a set time per dtype."""

    __version__ = "9.9.0"
    float16 = "float16"
    float32 = "float32"

    def __init__(self, clock: FakeClock, seconds: dict[str, float], available: bool = True):
        self.clock = clock
        self.seconds = seconds
        self.cuda = FakeCuda(available)
        self.version = SimpleNamespace(cuda="12.8")
        self.products: dict[str, int] = {"float16": 0, "float32": 0}
        self.fail: str | None = None

    def randn(self, *shape: int, dtype: str, device: str) -> FakeTensor:
        return FakeTensor(shape, dtype, device)

    def empty(self, *shape: int, dtype: str, device: str) -> FakeTensor:
        return FakeTensor(shape, dtype, device)

    def matmul(self, a: FakeTensor, b: FakeTensor, *, out: FakeTensor) -> None:
        assert a.device == b.device == out.device == "cuda:0"
        assert a.dtype == b.dtype == out.dtype and a.shape == b.shape == out.shape
        if self.fail:
            raise RuntimeError(self.fail)
        self.products[a.dtype] += 1
        self.clock.now += self.seconds[a.dtype]


def test_gpu_without_torch_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    assert measure_gpu() is None


def test_gpu_without_cuda_device_is_none() -> None:
    clock = FakeClock()
    torch = FakeTorch(clock, {}, available=False)
    assert measure_gpu(torch_module=torch, clock=clock) is None
    assert torch.products == {"float16": 0, "float32": 0}


def test_gpu_computes_tflops_from_timings() -> None:
    clock = FakeClock()
    n = 8192
    flop = 2 * n**3  # 1.0995e12
    # 1.5 ms per float16 product is 733 TFLOPS; 20 ms per float32 product is 55 TFLOPS.
    torch = FakeTorch(clock, {"float16": 0.0015, "float32": 0.020})
    t = measure_gpu(size=n, repeats=5, inner=10, budget_s=30.0, torch_module=torch, clock=clock)
    assert t is not None
    assert t.fp16_tflops == significant(flop / 0.0015 / 1e12, 4) == Decimal("733.0")
    assert t.fp32_tflops == significant(flop / 0.020 / 1e12, 4) == Decimal("54.98")
    assert t.fp64_tflops is None
    assert t.device == "cuda:0 Fake H100"
    assert t.method.startswith("torch 9.9.0 (CUDA 12.8): 8192x8192 matmul")
    assert "best of 5 float16 samples of 10" in t.method
    # Per type: 1 warm-up + 1 sizing product + 5 samples of 10.
    assert torch.products == {"float16": 52, "float32": 52}
    assert torch.cuda.synchronized == 2 * (1 + 1 + 5)
    assert torch.cuda.emptied
    assert t.seconds == pytest.approx(52 * 0.0015 + 52 * 0.020)


def test_gpu_respects_its_budget() -> None:
    clock = FakeClock()
    # A slow card: 2 s per float16 product, 4 s per float32 product, 10 s to spend.
    torch = FakeTorch(clock, {"float16": 2.0, "float32": 4.0})
    t = measure_gpu(size=1024, repeats=5, inner=10, budget_s=10.0, torch_module=torch, clock=clock)
    assert t is not None
    assert "samples of 1" in t.method  # one product per sample when products are slow
    assert "best of 1 float16" in t.method  # and samples stop at the deadline
    assert _positive_finite(t.fp16_tflops) and _positive_finite(t.fp32_tflops)
    # Warm-up + sizing + at least one sample per type: the floor of what can be measured.
    assert t.seconds <= 3 * 2.0 + 3 * 4.0


def test_gpu_error_is_unavailable_and_frees_memory() -> None:
    clock = FakeClock()
    torch = FakeTorch(clock, {"float16": 0.001, "float32": 0.01})
    torch.fail = "CUDA out of memory"
    with pytest.raises(Unavailable, match="GPU measurement failed: CUDA out of memory"):
        measure_gpu(torch_module=torch, clock=clock)
    assert torch.cuda.emptied


# ---- formatting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [
        (0.123456, 3, "0.123"),
        (1234.5, 3, "1230"),
        (Decimal("989.5"), 3, "990"),  # a tie: half-even picks the even neighbour, 990
        (Decimal("988.5"), 3, "988"),  # ... and here 988
        (0.0001234, 2, "0.00012"),
        (0.0, 3, "0"),
        (54.975, 4, "54.98"),
    ],
)
def test_significant(value: Decimal | float, digits: int, expected: str) -> None:
    assert str(significant(value, digits)) == expected


def test_significant_refuses_non_finite() -> None:
    with pytest.raises(InvalidInput):
        significant(math.inf)


def _throughput(fp64: str | None, fp32: str | None, fp16: str | None) -> Throughput:
    def dec(x: str | None) -> Decimal | None:
        return None if x is None else Decimal(x)

    return Throughput(dec(fp64), dec(fp32), dec(fp16), "test", "test", 0.1)


def test_compare_cpu_measurement_without_catalog_figures() -> None:
    report = compare(_throughput("0.1153", "0.2407", None), None, None)
    assert report == {
        "measured_fp64_tflops": "0.115",
        "catalog_fp64_tflops": "",
        "ratio_fp64": "",
        "measured_fp32_tflops": "0.241",
        "measured_fp16_tflops": "",
        "catalog_fp16_tflops": "",
        "ratio_fp16": "",
    }


def test_compare_gpu_measurement_with_catalog_figures() -> None:
    report = compare(_throughput(None, "54.98", "733.0"), Decimal("989.5"), Decimal("34"))
    assert report["measured_fp16_tflops"] == "733"
    assert report["catalog_fp16_tflops"] == "990"
    assert report["ratio_fp16"] == "0.741"  # 733.0 / 989.5
    assert report["measured_fp64_tflops"] == ""
    assert report["catalog_fp64_tflops"] == "34"
    assert report["ratio_fp64"] == ""
    assert report["measured_fp32_tflops"] == "55"  # 54.98 to 3 digits, trailing zero dropped
    assert all(isinstance(v, str) for v in report.values())


def test_compare_zero_catalog_figure_gives_no_ratio() -> None:
    report = compare(_throughput(None, None, "100"), Decimal("0"), None)
    assert report["ratio_fp16"] == ""
    assert report["catalog_fp16_tflops"] == "0"
