"""`computenet gateway --backend`: each backend takes its own options; an option it would
not use, a clash with --pools-file, or a missing required option is refused, never dropped."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from computenet.cli.backends import BACKEND_OPTIONS, REGISTRY, BackendOptions, build_backend
from computenet.errors import InvalidInput


def test_tes_keeps_the_cpus_and_prices_it_is_given(tmp_path: Path) -> None:
    opts = BackendOptions(
        tmp_path,
        region="44",
        cpus=8,
        price_per_core_hour=Decimal("0.5"),
        tes_url="http://127.0.0.1:9",
    )
    [pool] = build_backend("tes", opts).pools()
    assert (pool.cpu_cores, pool.price_per_core_hour) == (8, Decimal("0.5"))
    assert (pool.backend, pool.region.code, pool.label) == ("tes", "44", "tes")


def test_tes_takes_its_one_pool_from_a_pools_file(tmp_path: Path) -> None:
    spec = tmp_path / "pools.json"
    spec.write_text(json.dumps([{"label": "big", "cpu_cores": 64, "memory_mib": 262144}]))
    opts = BackendOptions(tmp_path, pools_file=spec, tes_url="http://127.0.0.1:9")
    [pool] = build_backend("tes", opts).pools()
    assert (pool.label, pool.cpu_cores, pool.memory_mib) == ("big", 64, 262144)


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("slurm", {"cpus": 4}, "the slurm backend does not use --cpus"),
        ("ray", {"ray_address": "http://h:8265", "measure": True}, "does not use --measure"),
        ("tes", {"tes_url": "http://h", "partition": "gpu"}, "does not use --partition"),
        ("local", {"tes_url": "http://h"}, "the local backend does not use --tes-url"),
        ("tes", {}, "--backend tes needs --tes-url"),
        ("ray", {}, "--backend ray needs --ray-address"),
        ("k8s", {}, "--backend must be one of local, slurm, ray, tes"),
    ],
)
def test_options_a_backend_would_not_use_are_refused(
    tmp_path: Path, kind: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        build_backend(kind, BackendOptions(tmp_path, **options))  # type: ignore[arg-type]


def test_a_pools_file_does_not_silently_override_other_options(tmp_path: Path) -> None:
    spec = tmp_path / "pools.json"
    spec.write_text("[]")
    with pytest.raises(InvalidInput, match="the slurm backend does not use --pools-file"):
        build_backend("slurm", BackendOptions(tmp_path, pools_file=spec))
    with pytest.raises(InvalidInput, match="--cpus would be ignored"):
        build_backend("local", BackendOptions(tmp_path, pools_file=spec, cpus=2))


def test_every_backend_option_belongs_to_some_backend() -> None:
    used = set().union(*(k.options for k in REGISTRY.values()))
    assert used == set(BACKEND_OPTIONS)
    assert all(k.required <= k.options for k in REGISTRY.values())
