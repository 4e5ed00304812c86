"""Simulated topology: pools at hub sites, with prices, power, carbon and a latency model.

The default topology puts three pools (K80, P100, V100) at each of the ten hub clusters of
"East Data, West Computing" (``data/china_hubs.csv``, copied from ``../shared``: public facts).
Prices, power and carbon intensities are stated assumptions, documented in
``docs/simulator.md``; a JSON topology file replaces them all.
"""

from __future__ import annotations

import csv
import json
import math
from decimal import Decimal
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from computenet.errors import InvalidInput
from computenet.model.pool import REGION_CODE, Money

HUBS_CSV = Path(__file__).with_name("data") / "china_hubs.csv"

# Fibre carries light at about 200 km per millisecond; real routes are longer than the great
# circle, and every hop adds a little: one-way latency = BASE + distance x ROUTE / 200.
_FIBRE_KM_PER_MS = 200.0
_ROUTE_FACTOR = 1.5
_BASE_LATENCY_MS = 2.0
_EARTH_RADIUS_KM = 6371.0


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
    inter_site_gbps: float = Field(default=10.0, gt=0, le=100_000)

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

    def latency_ms(self, region_a: str, region_b: str) -> float:
        """Modelled one-way latency between two sites (0 within a site)."""
        if region_a == region_b:
            return 0.0
        a, b = self.sites.get(region_a), self.sites.get(region_b)
        if a is None or b is None:
            raise InvalidInput(f"no site in the topology for region {region_a or region_b!r}")
        return _BASE_LATENCY_MS + distance_km(a, b) * _ROUTE_FACTOR / _FIBRE_KM_PER_MS

    def transfer_s(self, origin: str, pool: SimPool, input_gb: float) -> float:
        """Time to bring a job's inputs from ``origin`` to ``pool``: nothing when already there."""
        if not origin or origin == pool.region:
            return 0.0
        return self.latency_ms(origin, pool.region) / 1000 + input_gb * 8 / self.inter_site_gbps


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lon) points."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_KM * math.asin(math.sqrt(h))


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
# Modelled grid carbon intensity per province (g CO2 per kWh), see docs/simulator.md.
CARBON_G_PER_KWH = {
    "13": 850.0,  # Hebei
    "31": 600.0,  # Shanghai
    "34": 750.0,  # Anhui
    "44": 520.0,  # Guangdong
    "51": 150.0,  # Sichuan (hydro)
    "50": 450.0,  # Chongqing
    "15": 900.0,  # Inner Mongolia
    "52": 550.0,  # Guizhou
    "62": 450.0,  # Gansu
    "64": 750.0,  # Ningxia
}
_DEFAULT_CARBON = 700.0


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
                        carbon_g_per_kwh=CARBON_G_PER_KWH.get(region, _DEFAULT_CARBON),
                    )
                )
    return Topology(pools=tuple(pools))


def load_topology(path: Path) -> Topology:
    """Read a topology JSON file (``{"pools": [...], "inter_site_gbps": 10}``)."""
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
