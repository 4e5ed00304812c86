"""Where GB/T 2260 provinces are, for placing pools on the console's map.

Each province-level code maps to its English name and the coordinates of its capital, as
the scheduler's packaged table (``sched/data/provinces.csv``) has them. A pool that declares
its own lat/lon is placed there instead.
"""

from __future__ import annotations

from computenet.sched.network import provinces


def _table() -> dict[str, tuple[str, float, float]]:
    p = provinces()
    return {code: (p.names[i], float(p.lat[i]), float(p.lon[i])) for i, code in enumerate(p.codes)}


# Code -> (name, latitude, longitude): the scheduler's province table, the only one.
PROVINCES: dict[str, tuple[str, float, float]] = _table()


def place(code: str, lat: float | None = None, lon: float | None = None) -> tuple[float, float]:
    """Coordinates for a region: its own when given, else its province's capital."""
    if lat is not None and lon is not None:
        return lat, lon
    _, plat, plon = PROVINCES.get(code[:2], ("", 35.0, 105.0))  # unknown: centre of China
    return plat, plon


def province_name(code: str) -> str:
    """The province's English name, or the code itself when unknown."""
    return PROVINCES.get(code[:2], (code, 0.0, 0.0))[0]
