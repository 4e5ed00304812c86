"""The backends `computenet gateway --backend` can drive, each with the options it takes.

An option the chosen backend does not use is an error rather than silently dropped (issue
16: `--backend tes` used to ignore `--cpus` and prices, and `--pools-file` overrode any
`--backend`). Options are named as on the command line, without the leading dashes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from computenet.errors import InvalidInput
from computenet.gateway.backends.base import Backend
from computenet.gateway.backends.sandbox import Sandbox
from computenet.model.pool import PoolSpec, Region


@dataclass(frozen=True)
class BackendOptions:
    """What the command line gave; None where the operator did not set the option."""

    state_dir: Path
    region: str = "11"
    label: str | None = None
    cpus: int | None = None
    price_per_core_hour: Decimal | None = None
    price_per_card_hour: Decimal | None = None
    measure: bool = False
    pools_file: Path | None = None
    partition: str | None = None
    slurm_conf: Path | None = None
    ray_address: str | None = None
    tes_url: str | None = None
    tes_token: str | None = None
    sandbox: Sandbox | None = field(default=None, compare=False)

    def given(self) -> set[str]:
        """The backend-specific options the operator set (command-line names)."""
        out = set()
        for name in BACKEND_OPTIONS:
            value = getattr(self, name.replace("-", "_"))
            if value is not None and value is not False:
                out.add(name)
        return out

    @property
    def where(self) -> Region:
        """The region the pools are in."""
        return Region(code=self.region)

    @property
    def core_price(self) -> Decimal:
        """Price per core-hour (0 when not given)."""
        return self.price_per_core_hour or Decimal(0)

    @property
    def card_price(self) -> Decimal:
        """Price per card-hour (0 when not given)."""
        return self.price_per_card_hour or Decimal(0)


# Every option that belongs to some backend (the rest, --region and the gateway's own, apply
# to all).
BACKEND_OPTIONS = (
    "label",
    "cpus",
    "price-per-core-hour",
    "price-per-card-hour",
    "measure",
    "pools-file",
    "partition",
    "slurm-conf",
    "ray-address",
    "tes-url",
    "tes-token",
)
PRICES = frozenset({"price-per-core-hour", "price-per-card-hour"})


@dataclass(frozen=True)
class BackendKind:
    """One backend: the options it takes, those it needs, and how to build it."""

    name: str
    build: Callable[[BackendOptions], Backend]
    options: frozenset[str]
    required: frozenset[str] = frozenset()
    # Options that describe pools, which --pools-file replaces (so they clash with it).
    describing: frozenset[str] = frozenset()


def read_pools_file(path: Path) -> list[PoolSpec]:
    """Pool specs described by hand: a JSON list."""
    try:
        return TypeAdapter(list[PoolSpec]).validate_python(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise InvalidInput(f"{path}: not a JSON list of pool specs: {exc}") from None


def _local(o: BackendOptions) -> Backend:
    from computenet.cli.serve import declared_local_backend, local_backend

    if o.pools_file is not None:
        return declared_local_backend(o.state_dir, o.pools_file, o.sandbox)
    return local_backend(
        o.state_dir,
        o.label or "host",
        o.cpus,
        o.region,
        o.core_price,
        o.card_price,
        40.0 if o.measure else None,
        o.sandbox,
    )


def _slurm(o: BackendOptions) -> Backend:
    from computenet.gateway.backends.slurm import SlurmBackend

    return SlurmBackend(
        o.state_dir,
        partition=o.partition,
        slurm_conf=o.slurm_conf,
        region=o.where,
        price_per_core_hour=o.core_price,
        price_per_card_hour=o.card_price,
    )


def _ray(o: BackendOptions) -> Backend:
    from computenet.gateway.backends.ray import RayBackend

    assert o.ray_address is not None  # required
    return RayBackend(
        o.state_dir,
        address=o.ray_address,
        label=o.label or "ray",
        region=o.where,
        price_per_core_hour=o.core_price,
        price_per_card_hour=o.card_price,
    )


def _tes(o: BackendOptions) -> Backend:
    from computenet.gateway.backends.tes import TesBackend

    assert o.tes_url is not None  # required
    label = o.label or "tes"
    pool: PoolSpec | None = None
    if o.pools_file is not None:
        pools = read_pools_file(o.pools_file)
        if len(pools) != 1:
            raise InvalidInput(f"{o.pools_file}: a TES service is one pool, not {len(pools)}")
        pool = pools[0]
    elif o.cpus is not None or o.price_per_core_hour or o.price_per_card_hour:
        # TES cannot tell its capacity; the operator's figures describe the pool.
        pool = PoolSpec(
            label=label,
            cpu_cores=o.cpus or 1,
            memory_mib=1024,
            price_per_core_hour=o.core_price,
            price_per_card_hour=o.card_price,
        )
    return TesBackend(
        o.state_dir, url=o.tes_url, token=o.tes_token, label=label, pool=pool, region=o.where
    )


_POOL_FIGURES = frozenset({"label", "cpus", *PRICES})
REGISTRY: dict[str, BackendKind] = {
    k.name: k
    for k in (
        BackendKind(
            "local",
            _local,
            frozenset({*_POOL_FIGURES, "measure", "pools-file"}),
            describing=frozenset({*_POOL_FIGURES, "measure"}),
        ),
        BackendKind("slurm", _slurm, frozenset({"partition", "slurm-conf", *PRICES})),
        BackendKind(
            "ray",
            _ray,
            frozenset({"ray-address", "label", *PRICES}),
            required=frozenset({"ray-address"}),
        ),
        BackendKind(
            "tes",
            _tes,
            frozenset({"tes-url", "tes-token", "pools-file", *_POOL_FIGURES}),
            required=frozenset({"tes-url"}),
            describing=_POOL_FIGURES,
        ),
    )
}


def build_backend(kind: str, options: BackendOptions) -> Backend:
    """The backend ``kind`` built from ``options``; unknown, unused, clashing or missing
    options are refused with the option named."""
    spec = REGISTRY.get(kind)
    if spec is None:
        raise InvalidInput(f"--backend must be one of {', '.join(REGISTRY)}, not {kind!r}")
    given = options.given()
    if unused := sorted(given - spec.options):
        takes = ", ".join(f"--{o}" for o in sorted(spec.options))
        raise InvalidInput(
            f"the {kind} backend does not use {', '.join(f'--{o}' for o in unused)} "
            f"(it takes {takes})"
        )
    if missing := sorted(spec.required - given):
        raise InvalidInput(f"--backend {kind} needs {', '.join(f'--{o}' for o in missing)}")
    if "pools-file" in given and (clash := sorted(given & spec.describing)):
        raise InvalidInput(
            f"--pools-file describes the pools; {', '.join(f'--{o}' for o in clash)} "
            "would be ignored"
        )
    return spec.build(options)
