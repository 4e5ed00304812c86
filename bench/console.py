"""Console benchmark: a national node holding a 100,000-pool federation index.

Fills a fresh SQLite store (temporary data dir) with ``--pools`` pools of its own over 100
providers in every province, ``--fed-pools`` pools of 40 other nodes (4 regional nodes and
36 industry nodes below them) in its federation index, ``--tasks`` tasks in mixed states
with usage records, and an hour of quality samples; starts a real node on it (``computenet
node``, loopback, free port); then

- loads each console page's files and each data endpoint ``--repeat`` times, one request
  at a time, and prints p50/p99/max in milliseconds;
- with Chromium (Debian's, through Playwright), opens the Overview, Pools and the map
  ``--browser-repeat`` times each, in a fresh browser profile and as a returning visitor
  (the console's files in the HTTP cache), and times from navigation to the page drawn
  (Overview: counters filled and the map and doughnut inked; Pools: the first page of the
  federation index listed; map: the map chart inked), and prints median and max. The target
  is under 2 s each.

Needs nothing from ``../shared``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from computenet.model.ids import task_id
from computenet.model.pool import Accelerator, PoolSpec, Region
from computenet.model.usage import measure_usage
from computenet.node.regions import PROVINCES
from computenet.store import tables as t
from computenet.store import tables_monitoring as m
from computenet.store.db import Database, sqlite_url
from computenet.store.migrate import upgrade
from computenet.store.tables_federation import FedPool
from submit import own_node

TOKEN_RE = re.compile(r"admin token \(shown once, stored hashed\): (cna_\S+)")
STATES = ["COMPLETE"] * 6 + ["EXECUTOR_ERROR", "SYSTEM_ERROR", "QUEUED", "RUNNING", "CANCELED"]


def fill(data_dir: Path, pools: int, tasks: int, seed: int = 7) -> None:
    """Write providers, gateways, pools, tasks, usage and quality samples into a new store."""
    rnd = random.Random(seed)
    db = Database(sqlite_url(data_dir))
    upgrade(db)
    now = datetime.now(UTC)
    codes = sorted(PROVINCES)
    providers = [f"cn/p{i:03d}" for i in range(100)]
    with db.write() as s:
        s.execute(
            insert(t.Provider),
            [{"prefix": p, "name": f"provider {p}", "created_at": now} for p in providers],
        )
        s.execute(
            insert(t.Gateway),
            [
                {"id": f"G{i:025d}", "provider_prefix": p, "name": p, "created_at": now}
                for i, p in enumerate(providers)
            ],
        )
        rows = []
        for i in range(pools):
            acc = Accelerator(
                vendor="nvidia", model="nvidia-a100-sxm4-80g", memory_mib=81920, count=8
            )
            spec = PoolSpec(
                label=f"pool{i:04d}",
                cpu_cores=64,
                memory_mib=512 * 1024,
                machines=rnd.randint(1, 32),
                accelerator=acc if i % 3 else None,
                region=Region(code=codes[i % len(codes)]),
                price_per_card_hour=Decimal(rnd.randint(5, 40)),
                price_per_core_hour=Decimal("0.1"),
            )
            rows.append(
                {
                    "cpi": f"{providers[i % 100]}/pool{i:04d}",
                    "provider_prefix": providers[i % 100],
                    "gateway_id": f"G{i % 100:025d}",
                    "spec": spec.model_dump(mode="json"),
                    "health": "healthy" if i % 10 else "unhealthy",
                    "running_tasks": 0,
                    "last_heartbeat_at": now,
                    "updated_at": now,
                    "version": 1,
                }
            )
        s.execute(insert(t.Pool), rows)
        cpis = [r["cpi"] for r in rows]
        task_rows, usage_rows = [], []
        base_seq = int(now.timestamp() * 1e6) - tasks
        for i in range(tasks):
            state = rnd.choice(STATES)
            created = now - timedelta(seconds=rnd.uniform(0, 6 * 86400))
            started = created + timedelta(seconds=rnd.uniform(0, 600))
            ended = started + timedelta(seconds=rnd.uniform(1, 3600))
            pool = rnd.choice(cpis) if state != "QUEUED" else None
            tid = task_id("cn")
            task_rows.append(
                {
                    "id": tid,
                    "seq": base_seq + i,
                    "owner": "admin",
                    "client_key": None,
                    "name": f"bench-{i}",
                    "state": state,
                    "spec": {"executors": [{"command": ["echo", str(i)]}]},
                    "priority": 0,
                    "cpu_cores": 1,
                    "memory_mib": 1024,
                    "accelerators": 0,
                    "attempt": 1,
                    "pool_cpi": pool,
                    "reason": "",
                    "lease_id": None,
                    "lease_gateway_id": None,
                    "lease_expires_at": None,
                    "cancel_requested": False,
                    "created_at": created,
                    "updated_at": ended,
                    "started_at": started if pool else None,
                    "ended_at": ended
                    if state in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")
                    else None,
                    "tags": {},
                }
            )
            if state == "COMPLETE" and pool:
                u = measure_usage(
                    wall_s=Decimal(str(round((ended - started).total_seconds(), 3))),
                    cards=0,
                    accelerator_model=None,
                    cpu_cores=1,
                    memory_mib=1024,
                )
                usage_rows.append(
                    {
                        "task_id": tid,
                        "attempt": 1,
                        "pool_cpi": pool,
                        "accelerator_model": None,
                        "cards": 0,
                        "wall_s": u.wall_s,
                        "card_hours": u.card_hours,
                        "cpu_core_hours": u.cpu_core_hours,
                        "memory_gib_hours": u.memory_gib_hours,
                        "pflops_hours_fp16": None,
                        "created_at": ended,
                    }
                )
        s.execute(insert(t.Task), task_rows)
        s.execute(insert(t.UsageRecord), usage_rows)
        samples = [
            {
                "pool_cpi": r["cpi"],
                "provider_prefix": r["provider_prefix"],
                "at": now - timedelta(seconds=60 * k),
                "healthy": rnd.random() > 0.05,
                "heartbeat_age_s": rnd.uniform(0, 5),
                "running_tasks": 0,
            }
            for r in rows
            for k in range(60)
        ]
        s.execute(insert(m.PoolSample), samples)
    db.dispose()


def fill_index(data_dir: Path, pools: int, seed: int = 11) -> None:
    """Write ``pools`` records of 40 other nodes into the federation index, as the national
    node would hold them after its children's sync deltas."""
    rnd = random.Random(seed)
    db = Database(sqlite_url(data_dir))
    now = datetime.now(UTC)
    codes = sorted(PROVINCES)
    regionals = ["cn.31", "cn.44", "cn.51", "cn.52"]
    nodes = regionals + [f"{r}.ind{i}" for r in regionals for i in range(9)]
    models = ["nvidia-a100-sxm4-80g", "nvidia-h100-sxm5-80g", "ascend-910b", "mlu370-x8", None]
    for start in range(0, pools, 10_000):
        rows = []
        for i in range(start, min(pools, start + 10_000)):
            node = nodes[i % len(nodes)]
            provider = f"{node}/p{i % 50:02d}"
            model = models[i % len(models)]
            spec = {
                "label": f"f{i:06d}",
                "cpu_cores": 64,
                "memory_mib": 524288,
                "machines": rnd.randint(1, 16),
                "accelerator": {"vendor": "x", "model": model, "memory_mib": 65536, "count": 8}
                if model
                else None,
                "region": {"code": codes[rnd.randrange(len(codes))]},
                "currency": "CNY",
                "price_per_card_hour": str(rnd.randint(5, 40)),
                "price_per_core_hour": "0.1",
            }
            cpi = f"{provider}/f{i:06d}"
            health = "healthy" if i % 17 else "unhealthy"
            rows.append(
                {
                    "cpi": cpi,
                    "owner": node,
                    "via": node.split(".ind")[0],
                    "url": f"http://{node}.example:8750",
                    "record": {
                        "cpi": cpi,
                        "node": node,
                        "provider": provider,
                        "served_by_url": f"http://{node}.example:8750",
                        "health": health,
                        "running_tasks": rnd.randint(0, 4),
                        "version": 1,
                        "spec": spec,
                    },
                    "health": health,
                    "seq": i + 1,
                    "updated_at": now,
                }
            )
        with db.write() as s:
            s.execute(insert(FedPool), rows)
    db.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pools", type=int, default=1000)
    ap.add_argument("--fed-pools", type=int, default=100_000)
    ap.add_argument("--browser-repeat", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    fill_s = 0.0

    def prepare(data: Path) -> None:
        nonlocal fill_s
        began = time.perf_counter()
        fill(data, args.pools, args.tasks)
        fill_index(data, args.fed_pools)
        fill_s = time.perf_counter() - began

    with own_node(prepare=prepare, timeout_s=180) as node:
        results = measure(node.url, node.token, args.repeat)
        pages = browser_times(node.url, node.token, args.browser_repeat)
    report = {
        "load_average_1m": round(os.getloadavg()[0], 1),
        "pools": args.pools,
        "fed_pools": args.fed_pools,
        "tasks": args.tasks,
        "fill_s": round(fill_s, 1),
        "endpoints": results,
        "browser": pages,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"store: {args.pools} own pools, {args.fed_pools} in the federation index, "
        f"{args.tasks} tasks (filled in {fill_s:.1f} s); {args.repeat} loads each; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'what':58} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'bytes':>9}")
    for name, r in results.items():
        print(f"{name:58} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['max_ms']:8.1f} {r['bytes']:9d}")
    if pages:
        print(f"\nin Chromium, {args.browser_repeat} loads each (target: under 2000 ms)")
        print(f"{'page drawn':58} {'median ms':>9} {'max ms':>8}")
        for name, r in pages.items():
            print(f"{name:58} {r['median_ms']:9.0f} {r['max_ms']:8.0f}")
    else:
        print("\n(no Chromium: page render times not measured; scripts/chromium-up.sh)")


def measure(url: str, token: str, repeat: int) -> dict[str, dict[str, Any]]:
    """Time each page and endpoint ``repeat`` times over one keep-alive connection."""
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=60) as http:
        pools = http.get("/api/v1/console/pools", params={"page_size": 50}).json()
        deep = pools["next_page_token"]
        for _ in range(9):  # the 11th page of pools
            deep = http.get(
                "/api/v1/console/pools", params={"page_size": 50, "page_token": deep}
            ).json()["next_page_token"]
        tasks = http.get("/api/v1/tasks", params={"page_size": 25}).json()
        tid = tasks["tasks"][0]["id"]
        targets: dict[str, list[str]] = {
            "console files (index.html, 4 modules, css, ECharts, map)": [
                "/console/",
                "/console/app.js",
                "/console/pages.js",
                "/console/lib.js",
                "/console/charts.js",
                "/console/style.css",
                "/console/vendor/echarts-6.1.0.min.js",
                "/console/vendor/china-provinces.json",
            ],
            "overview page data (summary, provinces, nodes, tree)": [
                "/api/v1/console/summary",
                "/api/v1/console/fed/provinces",
                "/api/v1/console/fed/nodes",
                "/api/v1/console/tree",
            ],
            "GET /api/v1/console/pools?page_size=50": ["/api/v1/console/pools?page_size=50"],
            "GET /api/v1/console/pools (11th page)": [
                f"/api/v1/console/pools?page_size=50&page_token={deep}"
            ],
            "GET /api/v1/console/pools?health=unhealthy": [
                "/api/v1/console/pools?page_size=50&health=unhealthy"
            ],
            "GET /api/v1/tasks?page_size=25": ["/api/v1/tasks?page_size=25"],
            "GET /api/v1/tasks?page_size=25&state=COMPLETE": [
                "/api/v1/tasks?page_size=25&state=COMPLETE"
            ],
            "GET /api/v1/tasks/{id} (task page)": [f"/api/v1/tasks/{tid}"],
            "GET /api/v1/console/usage (7 days, hourly)": ["/api/v1/console/usage"],
            "GET /api/v1/console/providers/quality": ["/api/v1/console/providers/quality"],
            "GET /api/v1/console/latency": ["/api/v1/console/latency"],
            "GET /api/v1/console/summary (federation index)": ["/api/v1/console/summary"],
            "GET /api/v1/console/fed/provinces": ["/api/v1/console/fed/provinces"],
            "GET /api/v1/console/fed/nodes": ["/api/v1/console/fed/nodes"],
            "GET /api/v1/console/fed/pools?page_size=50": [
                "/api/v1/console/fed/pools?page_size=50"
            ],
            "GET /api/v1/console/fed/pools?node=cn.44&health=unhealthy": [
                "/api/v1/console/fed/pools?page_size=50&node=cn.44&health=unhealthy"
            ],
            "GET /api/v1/console/usage/by?dim=provider": ["/api/v1/console/usage/by?dim=provider"],
            "GET /metrics": ["/metrics"],
        }
        out = {}
        for name, paths in targets.items():
            times, size = [], 0
            for _ in range(repeat):
                began = time.perf_counter()
                size = 0
                for p in paths:
                    r = http.get(p)
                    r.raise_for_status()
                    size += len(r.content)
                times.append((time.perf_counter() - began) * 1000)
            out[name] = {
                "p50_ms": round(statistics.median(times), 1),
                "p99_ms": round(percentile(times, 0.99), 1),
                "max_ms": round(max(times), 1),
                "bytes": size,
            }
        return out


INKED_JS = """(name) => {
  const el = document.querySelector(`[data-chart="${name}"]`);
  const c = el && echarts.getInstanceByDom(el);
  if (!c || !c.getOption().series.length) return false;
  for (const cv of el.querySelectorAll("canvas")) {
    const px = cv.getContext("2d").getImageData(0, 0, cv.width, cv.height).data;
    for (let i = 3; i < px.length; i += 4 * 97) if (px[i] > 0) return true;
  }
  return false;
}"""


def _load(page: Any, url: str, hash_: str, times: dict[str, list[float]], tag: str) -> None:
    """Open one page and record how long it took to be drawn."""
    began = time.perf_counter()
    page.goto(f"{url}/console/#/{hash_}")
    if hash_ == "pools":
        page.wait_for_selector("#pools tr[data-cpi]", timeout=60_000)
        times[f"Pools (first page of 100k), {tag}"].append(time.perf_counter() - began)
        return
    page.wait_for_function(INKED_JS, arg="map", timeout=60_000, polling=20)
    times[f"Map (choropleth, nodes, links), {tag}"].append(time.perf_counter() - began)
    page.wait_for_function(INKED_JS, arg="health", timeout=60_000, polling=20)
    page.wait_for_selector("#counters .card", timeout=60_000)
    times[f"Overview (counters, map, doughnut), {tag}"].append(time.perf_counter() - began)


def browser_times(url: str, token: str, repeat: int) -> dict[str, dict[str, float]]:
    """Navigation-to-drawn times of the Overview, Pools and the map in Chromium, each in a
    fresh browser profile (nothing cached) and as a returning visitor (the console's files in
    the HTTP cache); empty when Chromium is missing."""
    exe = next(
        (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None
    )
    if exe is None:
        return {}
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = defaultdict(list)
    login = f"sessionStorage.setItem('computenet-token', {json.dumps(token)})"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            for _ in range(repeat):
                for hash_ in ("overview", "pools"):
                    page = browser.new_page(viewport={"width": 1920, "height": 1080})
                    page.add_init_script(login)
                    _load(page, url, hash_, times, "fresh profile")
                    page.close()
            context = browser.new_context(viewport={"width": 1920, "height": 1080})
            context.add_init_script(login)
            warm = context.new_page()
            _load(warm, url, "overview", defaultdict(list), "")  # fills the cache
            warm.close()
            for _ in range(repeat):
                for hash_ in ("overview", "pools"):
                    page = context.new_page()
                    _load(page, url, hash_, times, "returning visitor")
                    page.close()
            context.close()
        finally:
            browser.close()
    return {
        name: {
            "median_ms": round(1000 * statistics.median(v), 0),
            "max_ms": round(1000 * max(v), 0),
        }
        for name, v in sorted(times.items())
    }


if __name__ == "__main__":
    main()
