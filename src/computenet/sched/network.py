"""Regions, the default network model between them, and grid carbon intensity.

The default is a model, not a measurement: round-trip time grows with the great-circle
distance between province capitals (fibre at 200 km/ms, routes 1.5x longer than the great
circle, 2 ms fixed), bandwidth is 10 Gbit/s inside a province and 1 Gbit/s between provinces.
Measured links in ``Context.network`` replace it pair by pair (see docs/scheduling.md).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import numpy.typing as npt

from computenet.sched.types import Link

FIBRE_KM_PER_MS = 200.0
ROUTE_FACTOR = 1.5
BASE_RTT_MS = 2.0
INTRA_MBPS = 10_000.0
INTER_MBPS = 1_000.0
DEFAULT_CARBON_G_PER_KWH = 570.3  # MEE national grid average 2022, 0.5703 tCO2/MWh
EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class Provinces:
    """Province-level regions: codes, coordinates and assumed grid carbon intensity."""

    codes: tuple[str, ...]
    names: tuple[str, ...]
    index: dict[str, int]
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    carbon_g_per_kwh: npt.NDArray[np.float64]

    def of(self, code: str) -> int:
        """Index of the province holding region ``code`` (its first two digits), -1 if unknown."""
        return self.index.get(code[:2], -1)


@lru_cache(maxsize=1)
def provinces() -> Provinces:
    """The packaged province table (data/provinces.csv), read once."""
    text = resources.files("computenet.sched").joinpath("data/provinces.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    codes = tuple(r["code"] for r in rows)
    return Provinces(
        codes=codes,
        names=tuple(r["name"] for r in rows),
        index={c: i for i, c in enumerate(codes)},
        lat=np.array([float(r["lat"]) for r in rows]),
        lon=np.array([float(r["lon"]) for r in rows]),
        carbon_g_per_kwh=np.array([float(r["carbon_g_per_kwh"]) for r in rows]),
    )


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance between two points on the Earth, in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


def modelled_link(distance_km: float, same_region: bool) -> Link:
    """The default model's link over ``distance_km``."""
    rtt = BASE_RTT_MS + 2 * distance_km * ROUTE_FACTOR / FIBRE_KM_PER_MS
    return Link(rtt_ms=rtt, bandwidth_mbps=INTRA_MBPS if same_region else INTER_MBPS)


@lru_cache(maxsize=1)
def _default_matrices() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    prov = provinces()
    lat, lon = np.radians(prov.lat), np.radians(prov.lon)
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    a = np.sin(dlat / 2) ** 2 + np.cos(lat)[:, None] * np.cos(lat)[None, :] * np.sin(dlon / 2) ** 2
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(1.0, a)))
    rtt = BASE_RTT_MS + 2 * km * ROUTE_FACTOR / FIBRE_KM_PER_MS
    bw = np.full_like(rtt, INTER_MBPS)
    np.fill_diagonal(bw, INTRA_MBPS)
    return rtt, bw


def network_matrices(
    overrides: dict[tuple[str, str], Link] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(rtt_ms, bandwidth_mbps) matrices over :func:`provinces`, with measured overrides."""
    rtt, bw = _default_matrices()
    if not overrides:
        return rtt, bw
    rtt, bw = rtt.copy(), bw.copy()
    prov = provinces()
    for (src, dst), link in overrides.items():
        i, j = prov.of(src), prov.of(dst)
        if i >= 0 and j >= 0:
            rtt[i, j] = link.rtt_ms
            bw[i, j] = link.bandwidth_mbps
    return rtt, bw
