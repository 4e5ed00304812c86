"""The accelerator catalog: published throughput and memory per accelerator model.

The figures live in ``data/accelerators.csv`` (one cited source per row, see
``docs/accelerators.md``); this module only parses and indexes them. It is pure: no network,
no clock, and the packaged file is read once per process.

An empty cell means "not published or not citable", never zero, so every number is a
``Decimal`` or ``None``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources

from computenet.errors import NotFound

COLUMNS = (
    "model",
    "vendor",
    "name",
    "aliases",
    "memory_gib",
    "fp16_dense_tflops",
    "bf16_dense_tflops",
    "fp64_tflops",
    "source",
    "notes",
)
VENDORS = frozenset(
    {
        "nvidia",
        "huawei",
        "cambricon",
        "hygon",
        "kunlunxin",
        "mthreads",
        "metax",
        "iluvatar",
        "biren",
        "amd",
        "intel",
        "cpu",
    }
)
# A row whose notes start with this carries figures its sources disagree on or derive from
# another model: good enough to estimate speed, not to bill (docs/accelerators.md).
UNSURE_MARK = "UNSURE"

_MODEL_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_ALIAS_SEPARATOR = ";"


@dataclass(frozen=True)
class AcceleratorInfo:
    """One accelerator model as the catalog describes it.

    Throughput is peak dense (no structured sparsity) TFLOPS; ``None`` means the vendor
    publishes no figure we could cite, and ``notes`` says why.
    """

    model: str
    vendor: str
    name: str
    aliases: tuple[str, ...]
    memory_gib: Decimal | None
    fp16_dense_tflops: Decimal | None
    bf16_dense_tflops: Decimal | None
    fp64_tflops: Decimal | None
    source: str
    notes: str

    @property
    def unsure(self) -> bool:
        """True when the row's figures are flagged UNSURE in its notes (estimates only)."""
        return self.notes.startswith(UNSURE_MARK)

    @property
    def billable_fp16_tflops(self) -> Decimal | None:
        """The FP16 figure that may price PFLOPS-hours: ``None`` for an UNSURE row."""
        return None if self.unsure else self.fp16_dense_tflops


def normalize_name(name: str) -> str:
    """Fold a device name to its lookup key: lower case, letters and digits only.

    Tools print the same card in many spellings ("NVIDIA A100-SXM4-80GB", "a100 sxm4 80gb"),
    so case, spaces, hyphens and other punctuation are ignored.
    """
    return "".join(ch for ch in name.casefold() if ch.isalnum())


class Catalog:
    """An immutable index of accelerator models by id and by every known name."""

    def __init__(self, entries: Iterable[AcceleratorInfo]) -> None:
        """Index ``entries``; raise ``ValueError`` if two rows claim the same id or name."""
        self._by_model: dict[str, AcceleratorInfo] = {}
        self._by_key: dict[str, AcceleratorInfo] = {}
        for info in entries:
            if info.model in self._by_model:
                raise ValueError(f"accelerator model {info.model!r} is listed twice")
            self._by_model[info.model] = info
            for name in (info.model, info.name, *info.aliases):
                key = normalize_name(name)
                owner = self._by_key.setdefault(key, info)
                # A name shared by two models would make resolve() guess; refuse the data.
                if owner is not info:
                    raise ValueError(
                        f"name {name!r} of {info.model!r} already resolves to {owner.model!r}"
                    )

    def get(self, model: str) -> AcceleratorInfo:
        """Return the entry whose canonical id is ``model``; raise ``NotFound`` otherwise."""
        try:
            return self._by_model[model]
        except KeyError:
            hint = self.resolve(model)
            suggestion = f"; did you mean {hint.model!r}?" if hint is not None else ""
            raise NotFound(
                f"unknown accelerator model {model[:80]!r}{suggestion} "
                "(see docs/accelerators.md for the catalog)"
            ) from None

    def resolve(self, name: str) -> AcceleratorInfo | None:
        """Map a name seen in the wild (nvidia-smi, npu-smi, a cloud's short name) to an entry.

        Matching ignores case, spaces and punctuation and considers the model id, the display
        name and every alias. Returns ``None`` when nothing matches.
        """
        key = normalize_name(name)
        if not key:
            return None
        return self._by_key.get(key)

    def names(self, want: str) -> bool:
        """True when ``want`` names a model here as the scheduler matches it: a canonical id,
        a known name or alias, or a family that ids contain ('A100', 'nvidia-a100')."""
        key = normalize_name(want)
        return bool(key) and (
            self.resolve(want) is not None or any(key in normalize_name(m) for m in self._by_model)
        )

    def unknown_model(self, want: str) -> str | None:
        """None when ``want`` is a model or family of the catalog, else one line saying so
        and naming the known ids, for a user who misspelled a model."""
        if self.names(want):
            return None
        hint = self.resolve(want)
        suggestion = f" (did you mean {hint.model!r}?)" if hint is not None else ""
        return (
            f"unknown accelerator model {want[:80]!r}{suggestion}; known models: "
            f"{', '.join(self._by_model)} (`computenet catalog` describes them)"
        )

    def all(self) -> list[AcceleratorInfo]:
        """Every entry, in file order."""
        return list(self._by_model.values())

    def __contains__(self, model: object) -> bool:
        """True when ``model`` is a canonical id (exact match, as ``get`` requires)."""
        return isinstance(model, str) and model in self._by_model

    def __iter__(self) -> Iterator[AcceleratorInfo]:
        return iter(self._by_model.values())

    def __len__(self) -> int:
        return len(self._by_model)


def _decimal_cell(value: str, column: str, line: int) -> Decimal | None:
    text = value.strip()
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"line {line}: {column} {text!r} is not a number") from None
    if not number.is_finite() or number <= 0:
        raise ValueError(f"line {line}: {column} must be a positive number, got {text!r}")
    return number


def _parse_row(row: dict[str, str], line: int) -> AcceleratorInfo:
    model = row["model"].strip()
    if not _MODEL_ID.match(model):
        raise ValueError(f"line {line}: model id {model!r} must be lower-case words joined by '-'")
    vendor = row["vendor"].strip()
    if vendor not in VENDORS:
        raise ValueError(f"line {line}: vendor {vendor!r} is not one of {sorted(VENDORS)}")
    source = row["source"].strip()
    if not source:
        raise ValueError(f"line {line}: {model} has no source; every figure must be cited")
    aliases = tuple(a.strip() for a in row["aliases"].split(_ALIAS_SEPARATOR) if a.strip())
    return AcceleratorInfo(
        model=model,
        vendor=vendor,
        name=row["name"].strip() or model,
        aliases=aliases,
        memory_gib=_decimal_cell(row["memory_gib"], "memory_gib", line),
        fp16_dense_tflops=_decimal_cell(row["fp16_dense_tflops"], "fp16_dense_tflops", line),
        bf16_dense_tflops=_decimal_cell(row["bf16_dense_tflops"], "bf16_dense_tflops", line),
        fp64_tflops=_decimal_cell(row["fp64_tflops"], "fp64_tflops", line),
        source=source,
        notes=row["notes"].strip(),
    )


def parse_catalog(text: str) -> Catalog:
    """Build a ``Catalog`` from CSV text in the packaged format; ``ValueError`` on bad data."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError(f"catalog header must be {','.join(COLUMNS)}, got {reader.fieldnames}")
    entries = []
    for row in reader:
        # DictReader files surplus cells under the key None and fills missing ones with None.
        if None in row or None in row.values():
            raise ValueError(f"line {reader.line_num}: expected {len(COLUMNS)} cells")
        entries.append(_parse_row(row, reader.line_num))
    return Catalog(entries)


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """The catalog shipped with the package, parsed once and shared (it is immutable)."""
    data = resources.files("computenet.model").joinpath("data").joinpath("accelerators.csv")
    return parse_catalog(data.read_text(encoding="utf-8"))
