"""Measured throughput: time dense matrix products on this machine and report TFLOPS.

Catalog figures are vendor peaks. A gateway can instead time what its own hardware does:
``measure_cpu`` times NumPy's ``a @ b`` in float64 and float32, ``measure_gpu`` times PyTorch
float16 and float32 products on the first CUDA device. Both count ``2 * n**3`` floating-point
operations per ``n x n`` product and keep the best of several timed runs after a warm-up.
``compare`` sets a measurement beside the catalog's figures as strings fit for pool labels.

NumPy and PyTorch are optional and imported only when a measurement is asked for.
"""

from __future__ import annotations

import importlib
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

from computenet.errors import InvalidInput, Unavailable
from computenet.gateway.probe import parse_cpuinfo
from computenet.model.pool import MeasuredThroughput, PoolSpec

MIN_SIZE = 64  # measure_cpu never shrinks a matrix side below this
CALIBRATION_SIZE = 256  # side of the small product that estimates the CPU's speed
_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)

Clock = Callable[[], float]


@dataclass(frozen=True)
class Throughput:
    """Dense matrix-multiply throughput of one device, in TFLOPS (10**12 FLOP/s).

    A figure is ``None`` when it was not measured: FP16 on a CPU, FP64 on a GPU. ``device``
    names what ran the products, ``method`` what was run, and ``seconds`` is how long the
    whole measurement took.
    """

    fp64_tflops: Decimal | None
    fp32_tflops: Decimal | None
    fp16_tflops: Decimal | None
    device: str
    method: str
    seconds: float


def significant(value: Decimal | float, digits: int = 3) -> Decimal:
    """``value`` rounded half-even to ``digits`` significant digits, without an exponent."""
    number = value if isinstance(value, Decimal) else Decimal(repr(value))
    if not number.is_finite():
        raise InvalidInput(f"cannot round {value}: not a finite number")
    if number.is_zero():
        return Decimal(0)
    quantum = Decimal(1).scaleb(number.adjusted() - digits + 1)
    return Decimal(format(number.quantize(quantum, context=_CONTEXT), "f"))


def fit_size(requested: int, flop_per_s: float, target_s: float) -> int:
    """The matrix side to use so that one product takes at most about ``target_s``.

    ``requested`` when it fits (or is already at most ``MIN_SIZE``); otherwise the largest
    multiple of 64 whose ``2 * n**3`` FLOP take ``target_s`` at ``flop_per_s``, at least
    ``MIN_SIZE``.
    """
    if requested <= MIN_SIZE:
        return requested
    n = int((max(target_s, 0.0) * flop_per_s / 2) ** (1 / 3))
    if n >= requested:
        return requested
    return max(MIN_SIZE, n - n % 64)


def _check(budget_s: float, **counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{name} must be a positive whole number, got {value!r}")
    if not math.isfinite(budget_s) or budget_s <= 0:
        raise InvalidInput(f"budget_s must be a positive number of seconds, got {budget_s!r}")


def _tflops(n: int, seconds: float) -> Decimal:
    # A clock too coarse to see the product must not give an infinite figure.
    return significant(2 * n**3 / max(seconds, 1e-9) / 1e12, 4)


def _best_of(
    step: Callable[[], None], repeats: int, deadline: float, clock: Clock
) -> tuple[float, int]:
    """Best wall time of up to ``repeats`` calls of ``step``, and how many ran.

    Always runs once; stops early when another run would end after ``deadline``.
    """
    best = math.inf
    runs = 0
    while runs < repeats:
        start = clock()
        step()
        took = clock() - start
        best = min(best, took)
        runs += 1
        if clock() + took > deadline:
            break
    return best, runs


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    model = parse_cpuinfo(text)[0] or platform.processor() or platform.machine() or "unknown"
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return f"cpu: {model} ({cpus} CPUs)"


def _blas(np: ModuleType) -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except Exception:  # older NumPy or an odd build: the BLAS is then simply not named
        return "unknown BLAS"


def _time_numpy(
    np: ModuleType, dtype: Any, n: int, repeats: int, deadline: float
) -> tuple[float, int]:
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=dtype)
    b = rng.random((n, n), dtype=dtype)
    out = np.empty((n, n), dtype=dtype)

    def step() -> None:
        np.matmul(a, b, out=out)

    step()  # warm-up: pages in the operands and wakes the BLAS threads
    return _best_of(step, repeats, deadline, time.perf_counter)


def measure_cpu(*, size: int = 2048, repeats: int = 3, budget_s: float = 10.0) -> Throughput:
    """Time NumPy ``a @ b`` on ``size x size`` float64 and float32 matrices on this machine.

    One warm-up, then the best of ``repeats`` timed products per type. A small product first
    estimates the speed; when ``size`` would not fit ``budget_s`` the side shrinks (to a
    multiple of 64, at least ``MIN_SIZE``), and timed runs stop early at the deadline, so the
    budget is overrun by at most about one product.
    """
    _check(budget_s, size=size, repeats=repeats)
    # Imported here, not at the top: NumPy takes a noticeable time to load and most
    # commands never measure.
    import numpy as np

    began = time.perf_counter()
    deadline = began + budget_s

    c = min(size, CALIBRATION_SIZE)
    rng = np.random.default_rng(0)
    a, b = rng.random((c, c)), rng.random((c, c))
    a @ b  # the first call starts the BLAS thread pool; time the second
    start = time.perf_counter()
    a @ b
    rate = 2 * c**3 / max(time.perf_counter() - start, 1e-9)
    # Two types of (1 warm-up + repeats) products each; float32 is faster than float64, so
    # giving each product a float64 share of what is left is conservative.
    left = deadline - time.perf_counter()
    n = fit_size(size, rate, left / (2 * (repeats + 1)))

    best64, runs64 = _time_numpy(np, np.float64, n, repeats, deadline)
    best32, runs32 = _time_numpy(np, np.float32, n, repeats, deadline)
    shrunk = f" (asked {size}, shrunk to fit {budget_s:g} s)" if n != size else ""
    method = (
        f"numpy {np.__version__} with {_blas(np)}: {n}x{n} matmul{shrunk}, 2n^3 FLOP, "
        f"1 warm-up then best of {runs64} float64 and {runs32} float32"
    )
    return Throughput(
        fp64_tflops=_tflops(n, best64),
        fp32_tflops=_tflops(n, best32),
        fp16_tflops=None,
        device=_cpu_name(),
        method=method,
        seconds=time.perf_counter() - began,
    )


def _time_torch(
    torch: Any, dtype: Any, n: int, repeats: int, inner: int, deadline: float, clock: Clock
) -> tuple[float, int, int]:
    """Best seconds per product, samples run, and products per sample, for one dtype."""
    a = torch.randn(n, n, dtype=dtype, device="cuda:0")
    b = torch.randn(n, n, dtype=dtype, device="cuda:0")
    out = torch.empty(n, n, dtype=dtype, device="cuda:0")

    def products(count: int) -> None:
        for _ in range(count):
            torch.matmul(a, b, out=out)
        torch.cuda.synchronize()  # kernels run asynchronously: wait for them to finish

    products(1)  # warm-up: cuBLAS handle, kernel choice
    start = clock()
    products(1)
    one = max(clock() - start, 1e-9)
    count = max(1, min(inner, int((deadline - clock()) / (repeats * one))))
    best, runs = _best_of(lambda: products(count), repeats, deadline, clock)
    return best / count, runs, count


def measure_gpu(
    *,
    size: int = 8192,
    repeats: int = 5,
    inner: int = 10,
    budget_s: float = 30.0,
    torch_module: Any = None,
    clock: Clock = time.perf_counter,
) -> Throughput | None:
    """Time PyTorch float16 and float32 ``size x size`` products on CUDA device 0.

    ``None`` when PyTorch is missing or sees no CUDA device. Per type: one warm-up product,
    one timed product that sets how many products (at most ``inner``) a sample runs between
    two ``synchronize()`` calls, then the best of ``repeats`` samples, stopping early at the
    deadline (float16 has the first half of ``budget_s``, float32 the rest). ``torch_module``
    and ``clock`` exist for tests. A CUDA error (out of memory, a busy device) raises
    ``Unavailable``.
    """
    _check(budget_s, size=size, repeats=repeats, inner=inner)
    torch = torch_module
    if torch is None:
        try:
            torch = importlib.import_module("torch")
        except (ImportError, OSError):  # OSError: a torch whose CUDA libraries do not load
            return None
    if not torch.cuda.is_available():
        return None
    began = clock()
    deadline = began + budget_s
    try:
        # float16 goes first, until half of the budget; float32 gets what is left.
        half = began + budget_s / 2
        f16 = _time_torch(torch, torch.float16, size, repeats, inner, half, clock)
        f32 = _time_torch(torch, torch.float32, size, repeats, inner, deadline, clock)
        device = f"cuda:0 {torch.cuda.get_device_name(0)}"
    except RuntimeError as exc:
        raise Unavailable(f"GPU measurement failed: {exc}") from exc
    finally:
        torch.cuda.empty_cache()  # hand the operands' memory back to the driver
    cuda = getattr(getattr(torch, "version", None), "cuda", None) or "?"
    method = (
        f"torch {torch.__version__} (CUDA {cuda}): {size}x{size} matmul, 2n^3 FLOP, "
        f"1 warm-up then best of {f16[1]} float16 samples of {f16[2]} and "
        f"{f32[1]} float32 samples of {f32[2]}, synchronized"
    )
    return Throughput(
        fp64_tflops=None,
        fp32_tflops=_tflops(size, f32[0]),
        fp16_tflops=_tflops(size, f16[0]),
        device=device,
        method=method,
        seconds=clock() - began,
    )


def _text(value: Decimal | None) -> str:
    return "" if value is None else format(significant(value, 3).normalize(), "f")


def _ratio(measured: Decimal | None, catalog: Decimal | None) -> str:
    if measured is None or catalog is None or catalog.is_zero():
        return ""
    return _text(_CONTEXT.divide(measured, catalog))


def compare(
    measured: Throughput, catalog_fp16: Decimal | None, catalog_fp64: Decimal | None
) -> dict[str, str]:
    """Measured figures beside the catalog's, and their ratio, as strings for pool labels.

    Numbers have 3 significant digits and no exponent (``"0.12"``, ``"756"``, ``"1230"``);
    a figure that is unknown, and a ratio that cannot be formed, is ``""``.
    """
    return {
        "measured_fp64_tflops": _text(measured.fp64_tflops),
        "catalog_fp64_tflops": _text(catalog_fp64),
        "ratio_fp64": _ratio(measured.fp64_tflops, catalog_fp64),
        "measured_fp32_tflops": _text(measured.fp32_tflops),
        "measured_fp16_tflops": _text(measured.fp16_tflops),
        "catalog_fp16_tflops": _text(catalog_fp16),
        "ratio_fp16": _ratio(measured.fp16_tflops, catalog_fp16),
    }


def attach_measurements(
    pools: list[PoolSpec], cpu: Throughput | None, gpu: Throughput | None
) -> list[PoolSpec]:
    """Declare measured figures on the pools they belong to: the GPU's on the pool of that
    card, the CPU's on pools without accelerators."""
    now = datetime.now(UTC)
    out = []
    for pool in pools:
        source = None
        if pool.accelerator is None:
            source = cpu
        elif gpu is not None and pool.labels.get("gpu-name", "\0") in gpu.device:
            source = gpu
        if source is None:
            out.append(pool)
            continue
        measured = MeasuredThroughput(
            fp16_tflops=source.fp16_tflops if pool.accelerator is not None else None,
            fp32_tflops=source.fp32_tflops,
            fp64_tflops=source.fp64_tflops,
            device=source.device[:128],
            method=source.method[:512],
            measured_at=now,
        )
        out.append(pool.model_copy(update={"measured": measured}))
    return out
