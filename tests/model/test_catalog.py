"""The packaged accelerator catalog: coverage, citations, sane numbers, name resolution."""

from __future__ import annotations

from decimal import Decimal

import pytest

from computenet.errors import NotFound
from computenet.model.catalog import (
    COLUMNS,
    VENDORS,
    AcceleratorInfo,
    Catalog,
    load_catalog,
    normalize_name,
    parse_catalog,
)

# The densest FP16 part on the market is below this (B300: 2250 dense); anything larger is
# almost certainly a sparse figure copied by mistake, or a typo.
FP16_SANITY_TFLOPS = Decimal(2500)
FP64_SANITY_TFLOPS = Decimal(100)
MEMORY_SANITY_GIB = Decimal(512)

REQUIRED_MODELS = [
    "nvidia-t4",
    "nvidia-a10",
    "nvidia-v100-sxm2-16g",
    "nvidia-v100-sxm2-32g",
    "nvidia-a100-sxm-40g",
    "nvidia-a100-sxm-80g",
    "nvidia-a100-pcie-40g",
    "nvidia-a100-pcie-80g",
    "nvidia-l40s",
    "nvidia-h100-sxm",
    "nvidia-h100-pcie",
    "nvidia-h200-sxm",
    "huawei-ascend-910b2",
    "huawei-ascend-910b3",
    "huawei-ascend-910b4",
    "huawei-ascend-310p",
    "cambricon-mlu370-x8",
    "cambricon-mlu590",
    "hygon-k100",
    "cpu-generic",
    # Common in Chinese data centres (issue 17).
    "nvidia-p100-pcie-16g",
    "nvidia-l20",
    "nvidia-h20",
    "nvidia-a800-sxm-80g",
    "nvidia-h800-sxm",
    "huawei-ascend-910b",
    "huawei-ascend-910c",
    "kunlunxin-r200",
    "mthreads-mtt-s4000",
    "biren-br100",
]

HEADER = ",".join(COLUMNS)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_load_is_cached(catalog: Catalog) -> None:
    assert load_catalog() is catalog


@pytest.mark.parametrize("model", REQUIRED_MODELS)
def test_required_models_present(catalog: Catalog, model: str) -> None:
    assert model in catalog
    assert catalog.get(model).model == model


def test_every_row_is_cited_and_well_formed(catalog: Catalog) -> None:
    for info in catalog.all():
        assert info.source, info.model
        assert info.vendor in VENDORS, info.model
        assert info.name, info.model


def test_every_number_is_positive_and_plausible(catalog: Catalog) -> None:
    for info in catalog.all():
        numbers = [
            info.memory_gib,
            info.fp16_dense_tflops,
            info.bf16_dense_tflops,
            info.fp64_tflops,
        ]
        for number in numbers:
            assert number is None or number > 0, info.model
        if info.fp16_dense_tflops is not None:
            assert info.fp16_dense_tflops < FP16_SANITY_TFLOPS, info.model
        if info.fp64_tflops is not None:
            assert info.fp64_tflops < FP64_SANITY_TFLOPS, info.model
        if info.memory_gib is not None:
            assert info.memory_gib <= MEMORY_SANITY_GIB, info.model


def test_empty_figures_are_explained(catalog: Catalog) -> None:
    for info in catalog.all():
        if None in (info.fp16_dense_tflops, info.fp64_tflops, info.memory_gib):
            assert info.notes, f"{info.model} leaves a figure empty without saying why"


def test_unsure_rows_estimate_but_never_bill(catalog: Catalog) -> None:
    a800 = catalog.get("nvidia-a800-sxm-80g")
    assert a800.unsure and a800.fp16_dense_tflops == Decimal(312)
    assert a800.billable_fp16_tflops is None
    h100 = catalog.get("nvidia-h100-sxm")
    assert not h100.unsure and h100.billable_fp16_tflops == Decimal(989)
    # Every UNSURE row keeps its caveat in the notes, so explain and docs can repeat it.
    assert {"nvidia-a800-sxm-80g", "nvidia-h800-sxm", "huawei-ascend-910b"} <= {
        i.model for i in catalog.all() if i.unsure
    }


def test_cpu_generic_has_no_accelerator_figures(catalog: Catalog) -> None:
    cpu = catalog.get("cpu-generic")
    assert cpu.vendor == "cpu"
    assert cpu.fp16_dense_tflops is None


def test_known_figures(catalog: Catalog) -> None:
    # Spot checks against the cited sources, dense (no sparsity).
    assert catalog.get("nvidia-h100-sxm").fp16_dense_tflops == Decimal(989)
    assert catalog.get("nvidia-h100-sxm").fp64_tflops == Decimal(34)
    assert catalog.get("nvidia-a100-sxm-80g").fp16_dense_tflops == Decimal(312)
    assert catalog.get("nvidia-a100-sxm-80g").fp64_tflops == Decimal("9.7")
    assert catalog.get("nvidia-h200-sxm").memory_gib == Decimal(141)
    assert catalog.get("huawei-ascend-910b3").memory_gib == Decimal(64)


@pytest.mark.parametrize(
    ("seen", "model"),
    [
        ("NVIDIA H100 80GB HBM3", "nvidia-h100-sxm"),
        ("NVIDIA H100 PCIe", "nvidia-h100-pcie"),
        ("NVIDIA A100-SXM4-80GB", "nvidia-a100-sxm-80g"),
        ("NVIDIA A100-PCIE-40GB", "nvidia-a100-pcie-40g"),
        ("Tesla V100-SXM2-32GB", "nvidia-v100-sxm2-32g"),
        ("Tesla T4", "nvidia-t4"),
        ("NVIDIA A10", "nvidia-a10"),
        ("NVIDIA L40S", "nvidia-l40s"),
        ("NVIDIA H200", "nvidia-h200-sxm"),
        ("H100", "nvidia-h100-sxm"),
        ("A100-80GB", "nvidia-a100-sxm-80g"),
        ("T4", "nvidia-t4"),
        ("V100", "nvidia-v100-sxm2-16g"),
        ("Ascend910B3", "huawei-ascend-910b3"),
        ("910B3", "huawei-ascend-910b3"),
        ("310P3", "huawei-ascend-310p"),
        ("MLU370-X8", "cambricon-mlu370-x8"),
        ("A800", "nvidia-a800-sxm-80g"),
        ("NVIDIA H800", "nvidia-h800-sxm"),
        ("H20", "nvidia-h20"),
        ("Tesla P100-PCIE-16GB", "nvidia-p100-pcie-16g"),
        ("Ascend910B", "huawei-ascend-910b"),
        # Case, spaces and hyphens do not matter.
        ("nvidia h100 80gb hbm3", "nvidia-h100-sxm"),
        ("  tesla-t4  ", "nvidia-t4"),
        ("NVIDIA-H100-SXM", "nvidia-h100-sxm"),
    ],
)
def test_resolve_names_seen_in_the_wild(catalog: Catalog, seen: str, model: str) -> None:
    found = catalog.resolve(seen)
    assert found is not None, seen
    assert found.model == model


@pytest.mark.parametrize("seen", ["NVIDIA GeForce RTX 4090", "Ascend910B9", "", "   ", "-"])
def test_unknown_names_resolve_to_none(catalog: Catalog, seen: str) -> None:
    assert catalog.resolve(seen) is None


def test_get_unknown_model_raises_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound, match="unknown accelerator model"):
        catalog.get("nvidia-rtx-9999")


def test_get_suggests_the_canonical_id(catalog: Catalog) -> None:
    with pytest.raises(NotFound, match="nvidia-t4"):
        catalog.get("Tesla T4")


def test_contains_checks_canonical_ids_only(catalog: Catalog) -> None:
    assert "nvidia-t4" in catalog
    assert "Tesla T4" not in catalog
    assert 42 not in catalog


def test_all_returns_a_copy(catalog: Catalog) -> None:
    entries = catalog.all()
    entries.clear()
    assert len(catalog.all()) == len(catalog) > 0


def test_names_are_unambiguous(catalog: Catalog) -> None:
    owners: dict[str, str] = {}
    for info in catalog.all():
        for name in (info.model, info.name, *info.aliases):
            key = normalize_name(name)
            assert owners.setdefault(key, info.model) == info.model, name


def _info(model: str, aliases: tuple[str, ...] = ()) -> AcceleratorInfo:
    return AcceleratorInfo(
        model=model,
        vendor="nvidia",
        name=model,
        aliases=aliases,
        memory_gib=None,
        fp16_dense_tflops=None,
        bf16_dense_tflops=None,
        fp64_tflops=None,
        source="test",
        notes="",
    )


def test_catalog_refuses_ambiguous_aliases() -> None:
    with pytest.raises(ValueError, match="already resolves"):
        Catalog([_info("a-one", ("X1",)), _info("a-two", ("x-1",))])


def test_catalog_refuses_duplicate_models() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        Catalog([_info("a-one"), _info("a-one")])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x-1,nvidia,X,,80,-1,,,src,", "positive"),
        ("x-1,nvidia,X,,80,abc,,,src,", "not a number"),
        ("x-1,nvidia,X,,80,NaN,,,src,", "positive"),
        ("x-1,acme,X,,80,1,,,src,", "vendor"),
        ("x-1,nvidia,X,,80,1,,,,", "no source"),
        ("X_1,nvidia,X,,80,1,,,src,", "model id"),
        ("x-1,nvidia,X,,80", "cells"),
        ("x-1,nvidia,X,,80,1,,,src,,extra", "cells"),
    ],
)
def test_parse_refuses_bad_rows(row: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_catalog(f"{HEADER}\n{row}\n")


def test_parse_refuses_wrong_header() -> None:
    with pytest.raises(ValueError, match="header"):
        parse_catalog("model,vendor\nx,nvidia\n")


def test_parse_reads_optional_cells_as_none() -> None:
    catalog = parse_catalog(f"{HEADER}\nx-1,nvidia,X,X one; X-1b ,,12.5,,,src,why\n")
    info = catalog.get("x-1")
    assert info.aliases == ("X one", "X-1b")
    assert info.memory_gib is None
    assert info.fp16_dense_tflops == Decimal("12.5")
    assert info.notes == "why"
