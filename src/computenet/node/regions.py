"""Where GB/T 2260 provinces are, for placing pools on the console's map.

Each province-level code maps to its English name and the coordinates of its capital
(approximate, to two decimals). A pool that declares its own lat/lon is placed there instead.
"""

from __future__ import annotations

PROVINCES: dict[str, tuple[str, float, float]] = {
    "11": ("Beijing", 39.90, 116.41),
    "12": ("Tianjin", 39.13, 117.20),
    "13": ("Hebei", 38.04, 114.51),
    "14": ("Shanxi", 37.87, 112.55),
    "15": ("Inner Mongolia", 40.84, 111.75),
    "21": ("Liaoning", 41.80, 123.43),
    "22": ("Jilin", 43.82, 125.32),
    "23": ("Heilongjiang", 45.75, 126.63),
    "31": ("Shanghai", 31.23, 121.47),
    "32": ("Jiangsu", 32.06, 118.80),
    "33": ("Zhejiang", 30.27, 120.15),
    "34": ("Anhui", 31.82, 117.23),
    "35": ("Fujian", 26.07, 119.30),
    "36": ("Jiangxi", 28.68, 115.86),
    "37": ("Shandong", 36.65, 117.12),
    "41": ("Henan", 34.76, 113.65),
    "42": ("Hubei", 30.59, 114.31),
    "43": ("Hunan", 28.23, 112.94),
    "44": ("Guangdong", 23.13, 113.26),
    "45": ("Guangxi", 22.82, 108.37),
    "46": ("Hainan", 20.04, 110.34),
    "50": ("Chongqing", 29.56, 106.55),
    "51": ("Sichuan", 30.57, 104.07),
    "52": ("Guizhou", 26.65, 106.63),
    "53": ("Yunnan", 25.04, 102.71),
    "54": ("Tibet", 29.65, 91.13),
    "61": ("Shaanxi", 34.34, 108.94),
    "62": ("Gansu", 36.06, 103.83),
    "63": ("Qinghai", 36.62, 101.78),
    "64": ("Ningxia", 38.49, 106.23),
    "65": ("Xinjiang", 43.83, 87.62),
    "71": ("Taiwan", 25.03, 121.57),
    "81": ("Hong Kong", 22.32, 114.17),
    "82": ("Macao", 22.20, 113.55),
}


def place(code: str, lat: float | None = None, lon: float | None = None) -> tuple[float, float]:
    """Coordinates for a region: its own when given, else its province's capital."""
    if lat is not None and lon is not None:
        return lat, lon
    _, plat, plon = PROVINCES.get(code[:2], ("", 35.0, 105.0))  # unknown: centre of China
    return plat, plon


def province_name(code: str) -> str:
    """The province's English name, or the code itself when unknown."""
    return PROVINCES.get(code[:2], (code, 0.0, 0.0))[0]
