"""Normalized compute: turn a task's wall time and resources into billable units.

Usage is recorded twice over: raw card-hours of one accelerator model, and PFLOPS-hours of
dense FP16 so that an hour on one chip can be compared with, priced against and settled
with an hour on another. All arithmetic is ``Decimal`` in a private context and every result
is rounded once, to ``PLACES`` decimal places, so the same inputs give the same digits on
every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

from computenet.errors import InvalidInput
from computenet.model.catalog import Catalog, load_catalog

PLACES = 9
_QUANTUM = Decimal(1).scaleb(-PLACES)
# 60 significant digits: far more than any real input needs, so only the final quantize rounds.
_CONTEXT = Context(prec=60, rounding=ROUND_HALF_EVEN)
_SECONDS_PER_HOUR = Decimal(3600)
_MIB_PER_GIB = Decimal(1024)
_TFLOPS_PER_PFLOPS = Decimal(1000)


@dataclass(frozen=True)
class Usage:
    """Resources one task consumed, in the units ComputeNet bills and settles.

    ``pflops_hours_fp16`` is ``None`` when no FP16 figure is known for the accelerator
    (neither measured nor in the catalog) and for CPU-only work.
    """

    accelerator_model: str | None
    cards: int
    wall_s: Decimal
    card_hours: Decimal
    cpu_core_hours: Decimal
    memory_gib_hours: Decimal
    pflops_hours_fp16: Decimal | None


def _to_decimal(value: Decimal | float | int, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | float | int):
        raise InvalidInput(f"{what} must be a number, got {type(value).__name__}")
    # str() of a float is its shortest round-trip form, so 0.1 becomes Decimal("0.1").
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise InvalidInput(f"{what} must be finite, got {value}")
    if number < 0:
        raise InvalidInput(f"{what} must not be negative, got {value}")
    return number


def _count(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be a whole number, got {type(value).__name__}")
    if value < 0:
        raise InvalidInput(f"{what} must not be negative, got {value}")
    return value


def _round(value: Decimal, what: str) -> Decimal:
    try:
        return value.quantize(_QUANTUM, context=_CONTEXT)
    except InvalidOperation:
        raise InvalidInput(f"{what} is too large to record") from None


def measure_usage(
    *,
    wall_s: Decimal | float,
    cards: int,
    accelerator_model: str | None,
    cpu_cores: int,
    memory_mib: int,
    measured_fp16_tflops: Decimal | None = None,
    catalog: Catalog | None = None,
) -> Usage:
    """Compute the billable usage of ``cards`` accelerators held for ``wall_s`` seconds.

    ``card_hours = cards * wall_s / 3600`` and
    ``pflops_hours_fp16 = card_hours * fp16_tflops / 1000``, where the FP16 figure is the
    pool's ``measured_fp16_tflops`` when the gateway measured one, else the catalog's dense
    figure. ``accelerator_model`` is a catalog id (``NotFound`` if unknown) or ``None`` for
    CPU-only work, which then must ask for no cards. Negative or non-finite inputs raise
    ``InvalidInput``.
    """
    wall = _round(_to_decimal(wall_s, "wall_s"), "wall_s")
    cards = _count(cards, "cards")
    cpu_cores = _count(cpu_cores, "cpu_cores")
    memory_mib = _count(memory_mib, "memory_mib")

    tflops: Decimal | None = None
    if accelerator_model is None:
        if cards:
            raise InvalidInput("cards were requested but no accelerator model was given")
        if measured_fp16_tflops is not None:
            raise InvalidInput("a measured FP16 figure needs an accelerator model")
    else:
        cat = catalog or load_catalog()
        # A model outside the catalog still bills card-hours; it just has no FP16 figure.
        info = cat.get(accelerator_model) if accelerator_model in cat else None
        if measured_fp16_tflops is not None:
            tflops = _to_decimal(measured_fp16_tflops, "measured_fp16_tflops")
            if tflops == 0:
                raise InvalidInput("measured_fp16_tflops must be positive")
        else:
            # An UNSURE catalog figure never prices work; a measured one may.
            tflops = info.billable_fp16_tflops if info else None

    hours = _CONTEXT.divide(wall, _SECONDS_PER_HOUR)
    card_hours = _CONTEXT.multiply(hours, cards)
    pflops_hours = None
    if tflops is not None:
        # Start from the unquantized card-hours so the two roundings do not compound.
        raw = _CONTEXT.divide(_CONTEXT.multiply(card_hours, tflops), _TFLOPS_PER_PFLOPS)
        pflops_hours = _round(raw, "pflops_hours_fp16")
    gib = _CONTEXT.divide(Decimal(memory_mib), _MIB_PER_GIB)
    return Usage(
        accelerator_model=accelerator_model,
        cards=cards,
        wall_s=wall,
        card_hours=_round(card_hours, "card_hours"),
        cpu_core_hours=_round(_CONTEXT.multiply(hours, cpu_cores), "cpu_core_hours"),
        memory_gib_hours=_round(_CONTEXT.multiply(hours, gib), "memory_gib_hours"),
        pflops_hours_fp16=pflops_hours,
    )
