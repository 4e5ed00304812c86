"""What the metric plane's latency histograms cost the router per request (bench/README.md).

    .venv/bin/python bench/plane_cost.py [--calls 200000]

Times ``MetricPlane.observe`` (the one call the router makes at a request's end: a bucket
search and four increments) against an empty call, both with the production clock, and
prints microseconds per request. bench/serve.py measures the whole router; this isolates the
part the latency plane adds, which is below what serve.py can resolve on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from computenet.node.routing.config import RoutingSettings
from computenet.node.routing.plane import MetricPlane


def main() -> None:
    """Time ``observe`` and a do-nothing call, interleaved in five rounds; print the best."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200_000)
    calls = ap.parse_args().calls
    plane = MetricPlane(RoutingSettings(), "cn", "11")
    rng = random.Random(1)
    samples = [(rng.lognormvariate(1.0, 1.0), rng.lognormvariate(2.0, 1.0)) for _ in range(1000)]
    keys = [f"cn.t{i}" for i in range(8)]

    def nothing(_key: str, _a: float, _b: float) -> None:
        pass

    best: dict[str, float] = {}
    for _ in range(5):
        for name, fn in (("empty_call", nothing), ("observe", plane.observe)):
            t0 = time.perf_counter()
            for i in range(calls):
                a, b = samples[i % 1000]
                fn(keys[i % 8], a, b)
            us = (time.perf_counter() - t0) / calls * 1e6
            best[name] = min(best.get(name, us), us)
    added = best["observe"] - best["empty_call"]
    print(json.dumps({"us_per_call": {k: round(v, 3) for k, v in best.items()},
                      "observe_added_us": round(added, 3), "calls": calls}))  # fmt: skip


if __name__ == "__main__":
    main()
