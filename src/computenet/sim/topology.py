"""Simulated topology: pools at hub sites, with prices, power, carbon and a latency model.

The default topology puts three pools (K80, P100, V100) at each of the ten hub clusters of
"East Data, West Computing" (``data/china_hubs.csv``, copied from ``../shared``: public facts).
Prices and power are stated assumptions, documented in ``docs/simulator.md``; grid carbon
and the network between sites come from the scheduler's own models
(``computenet.sched.network``), so the simulated truth and the core's estimates agree on
them. A JSON topology file replaces the pools.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from computenet.errors import InvalidInput
from computenet.model.pool import REGION_CODE, Money
from computenet.sched.estimates import BITS_PER_BYTE
from computenet.sched.network import (
    DEFAULT_CARBON_G_PER_KWH,
    great_circle_km,
    modelled_link,
    provinces,
)
from computenet.sched.types import Link

HUBS_CSV = Path(__file__).with_name("data") / "china_hubs.csv"


class Strict(BaseModel):
    """Topology records refuse unknown fields and never change once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SimPool(Strict):
    """One homogeneous pool: machines with the same accelerator, at one site, at one price."""

    pool_id: str = Field(min_length=1, max_length=256, description="CPI-like id, unique")
    site: str = Field(min_length=1, max_length=128)
    region: str = Field(description="GB/T 2260 code of the site")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    vendor: str = Field(default="nvidia", min_length=1, max_length=64)
    accelerator: str = Field(min_length=1, max_length=64, description="accelerator model id")
    memory_gib: int = Field(ge=1, le=16384, description="memory per card")
    cards_per_machine: int = Field(ge=1, le=1024)
    machines: int = Field(ge=1, le=100_000)
    price_per_card_hour: Money
    card_power_w: float = Field(ge=0, le=10_000)
    pue: float = Field(default=1.3, ge=1, le=5)
    carbon_g_per_kwh: float = Field(ge=0, le=2000)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not REGION_CODE.fullmatch(v):
            raise ValueError("region must be a GB/T 2260 code of 2, 4 or 6 digits")
        return v

    @property
    def cards(self) -> int:
        """Cards in the whole pool."""
        return self.cards_per_machine * self.machines


class Topology(Strict):
    """Pools plus the network model between their sites."""

    pools: tuple[SimPool, ...] = Field(min_length=1, max_length=100_000)

    @field_validator("pools")
    @classmethod
    def _unique(cls, v: tuple[SimPool, ...]) -> tuple[SimPool, ...]:
        ids = [p.pool_id for p in v]
        if len(set(ids)) != len(ids):
            raise ValueError("pool ids must be unique")
        return v

    @cached_property
    def sites(self) -> dict[str, tuple[float, float]]:
        """Coordinates of each region code that hosts a pool."""
        return {p.region: (p.lat, p.lon) for p in self.pools}

    def link(self, region_a: str, region_b: str) -> Link:
        """The modelled link between two sites (the core's distance model, on our sites)."""
        a, b = self.sites.get(region_a), self.sites.get(region_b)
        if a is None or b is None:
            missing = region_a if a is None else region_b
            raise InvalidInput(f"no site in the topology for region {missing!r}")
        return modelled_link(great_circle_km(*a, *b), region_a == region_b)

    @cached_property
    def network(self) -> dict[tuple[str, str], Link]:
        """Every pair of sites, for the core's Context."""
        return {(a, b): self.link(a, b) for a in self.sites for b in self.sites}

    def transfer_s(self, origin: str, pool: SimPool, input_gb: float) -> float:
        """Time to bring a job's inputs from ``origin`` to ``pool`` (0 without an origin)."""
        if not origin:
            return 0.0
        link = self.network.get((origin, pool.region)) or self.link(origin, pool.region)
        return link.rtt_ms / 1000 + input_gb * 1e9 * BITS_PER_BYTE / (link.bandwidth_mbps * 1e6)


# The three Gavel accelerator types as catalog models: (model id, memory GiB, board power W,
# list price per card-hour in CNY at an eastern hub). Prices follow the ratio of public cloud
# on-demand prices for these cards (about 0.45 : 1.46 : 2.48 USD) at 6.5 CNY/USD, so a faster
# card costs more per hour but can cost less per job.
GAVEL_CARDS: dict[str, tuple[str, int, float, Decimal]] = {
    "k80": ("nvidia-k80", 12, 300.0, Decimal("2.90")),
    "p100": ("nvidia-p100-pcie-16g", 16, 250.0, Decimal("9.50")),
    "v100": ("nvidia-v100-sxm2-16g", 16, 300.0, Decimal("16.10")),
}
# Western hubs sell cheaper (cheaper power and land) and run cooler (lower PUE).
_WEST_PRICE_FACTOR = Decimal("0.85")
_PUE = {"east": 1.35, "west": 1.2}


def grid_carbon(region: str) -> float:
    """The scheduler's grid carbon intensity for a region (its province), g CO2/kWh."""
    table = provinces()
    i = table.of(region)
    return float(table.carbon_g_per_kwh[i]) if i >= 0 else DEFAULT_CARBON_G_PER_KWH


def _label(text: str) -> str:
    return "".join(c for c in text.lower().replace(" ", "-") if c.isalnum() or c == "-")


def default_topology(machines_per_pool: int = 4, cards_per_machine: int = 8) -> Topology:
    """Three pools (K80, P100, V100) at each of the ten hub clusters."""
    pools: list[SimPool] = []
    with HUBS_CSV.open(newline="") as fh:
        for row in csv.DictReader(fh):
            west = row["role"] == "west"
            factor = _WEST_PRICE_FACTOR if west else Decimal(1)
            region = row["gbt2260"]
            site = _label(row["city"])
            for kind, (model, mem, power, price) in GAVEL_CARDS.items():
                pools.append(
                    SimPool(
                        pool_id=f"cn.{region}/{site}/{kind}",
                        site=site,
                        region=region,
                        lat=float(row["lat"]),
                        lon=float(row["lon"]),
                        accelerator=model,
                        memory_gib=mem,
                        cards_per_machine=cards_per_machine,
                        machines=machines_per_pool,
                        price_per_card_hour=(price * factor).quantize(Decimal("0.01")),
                        card_power_w=power,
                        pue=_PUE["west" if west else "east"],
                        carbon_g_per_kwh=grid_carbon(region),
                    )
                )
    return Topology(pools=tuple(pools))


def load_topology(path: Path) -> Topology:
    """Read a topology JSON file (``{"pools": [...]}``)."""
    try:
        raw = json.loads(path.read_text())
        return Topology.model_validate(raw)
    except OSError as exc:
        raise InvalidInput(f"cannot read topology {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"topology {path} is not JSON: {exc.msg} at line {exc.lineno}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"topology {path}: {where}: {err['msg']}") from exc
