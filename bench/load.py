"""Sustained load: a steady submit rate against one node on PostgreSQL, for minutes.

It starts a throwaway PostgreSQL server with ``scripts/pg-up.sh`` (or uses ``--db-url``),
starts ``computenet node`` on it, and submits at ``--rate`` tasks per second for
``--duration-s`` seconds from ``--concurrency`` connections, each submission at its scheduled
time (so a slow server shows as latency, not as a lower offered rate). Every ``--window-s``
it prints the window's throughput, p50/p99 latency, errors and the node's resident memory;
at the end the totals, the memory trend (least-squares slope over the second half, MiB per
minute) and a row check: every acknowledged task is in the store. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from submit import BODY, Node, own_node, pct, proc_cpu_s, proc_mem_mib

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Window:
    """What one reporting window saw."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Run:
    """Everything the load saw, window by window."""

    windows: list[Window] = field(default_factory=list)
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (elapsed s, RSS)
    lag_s: float = 0.0  # how far behind schedule the senders fell at worst
    acked: int = 0


async def drive(node: Node, args: argparse.Namespace) -> Run:
    """Submit at a steady rate; sample the node's memory at each window boundary."""
    run, run_id = Run(), uuid.uuid4().hex[:10]
    total = int(args.rate * args.duration_s)
    headers = {"Authorization": f"Bearer {node.token}", "Content-Type": "application/json"}
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    start = time.perf_counter()
    n_windows = max(1, math.ceil(args.duration_s / args.window_s))
    run.windows = [Window() for _ in range(n_windows)]
    next_i = 0

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < total:
            i, next_i = next_i, next_i + 1
            due = start + i / args.rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                run.lag_s = max(run.lag_s, now - due)
            w = run.windows[min(n_windows - 1, int((due - start) // args.window_s))]
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    "/api/v1/tasks", content=BODY, headers={"Idempotency-Key": f"{run_id}-{i}"}
                )
            except httpx.HTTPError as exc:
                w.errors[type(exc).__name__] += 1
                continue
            if r.status_code == 201:
                w.latencies_ms.append((time.perf_counter() - t0) * 1000)
                run.acked += 1
            else:
                w.errors[f"HTTP {r.status_code}"] += 1

    async def sampler() -> None:
        for k in range(1, n_windows + 1):
            await asyncio.sleep(max(0.0, start + k * args.window_s - time.perf_counter()))
            if node.pid:
                run.rss_mib.append((time.perf_counter() - start, proc_mem_mib(node.pid)["VmRSS"]))
            if k <= len(run.windows):
                show(k, run.windows[k - 1], run.rss_mib[-1][1] if run.rss_mib else None, args)

    clients = [
        httpx.AsyncClient(base_url=node.url, headers=headers, limits=one, timeout=30)
        for _ in range(args.concurrency)
    ]
    sampling = asyncio.create_task(sampler())
    try:
        await asyncio.gather(*(sender(c) for c in clients))
        await sampling  # the last window's line and memory sample
    finally:
        sampling.cancel()
        await asyncio.gather(*(c.aclose() for c in clients))
    return run


def show(k: int, w: Window, rss: float | None, args: argparse.Namespace) -> None:
    """One line per window, printed as the run goes."""
    lat = sorted(w.latencies_ms)
    print(
        f"[{k * args.window_s:5.0f} s] {len(lat) / args.window_s:6.1f} tasks/s"
        f"  p50 {pct(lat, 0.5):6.2f} ms  p99 {pct(lat, 0.99):7.2f} ms"
        f"  errors {sum(w.errors.values())}"
        + (f"  node RSS {rss:.1f} MiB" if rss is not None else ""),
        flush=True,
    )


def slope_mib_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of RSS over the second half of the run (after warm-up)."""
    half = points[len(points) // 2 :]
    if len(half) < 3:
        return None
    n = len(half)
    mx = sum(x for x, _ in half) / n
    my = sum(y for _, y in half) / n
    var = sum((x - mx) ** 2 for x, _ in half)
    cov = sum((x - mx) * (y - my) for x, y in half)
    return round(cov / var * 60, 3) if var else None


def summary(
    run: Run, node: Node, db_url: str, args: argparse.Namespace, cpu_s: float
) -> dict[str, Any]:
    """Totals over the whole run, and the row check against the store."""
    lat = sorted(x for w in run.windows for x in w.latencies_ms)
    errors = sum((w.errors for w in run.windows), Counter[str]())
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = int(conn.execute(text("SELECT count(*) FROM tasks")).scalar_one())
    engine.dispose()
    return {
        "params": {k: getattr(args, k) for k in ("rate", "duration_s", "concurrency")},
        "acked": run.acked,
        "tasks_per_s": round(run.acked / args.duration_s, 1),
        "latency_ms": {q: pct(lat, v) for q, v in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
        "errors": dict(errors),
        "worst_sender_lag_s": round(run.lag_s, 3),
        "node_cpu_s": round(cpu_s, 1),
        "rss_mib": {"first": run.rss_mib[0][1], "last": run.rss_mib[-1][1]} if run.rss_mib else {},
        "rss_slope_mib_per_min_second_half": slope_mib_per_min(run.rss_mib),
        "store_rows": rows,
        "durable": rows == run.acked,
    }


def start_postgres(tmp: Path) -> str:
    """A throwaway server from the project's script; its URL."""
    with socket.socket() as sock:  # a free loopback port
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "pg-up.sh"), str(tmp / "pg"), str(port)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"could not start PostgreSQL with scripts/pg-up.sh: {proc.stderr.strip()}")
    return proc.stdout.strip().splitlines()[-1]


def main() -> int:
    """Parse options, run the load, print the totals; 1 on errors or a missing row."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=300.0, help="submissions per second")
    ap.add_argument("--duration-s", type=float, default=300.0, help="how long to keep it up")
    ap.add_argument("--concurrency", type=int, default=32, help="connections")
    ap.add_argument("--window-s", type=float, default=10.0, help="report interval")
    ap.add_argument("--db-url", help="PostgreSQL URL to use instead of a throwaway server")
    ap.add_argument("--json", action="store_true", help="also print the totals as JSON")
    args = ap.parse_args()
    if min(args.rate, args.duration_s, args.concurrency, args.window_s) <= 0:
        ap.error("--rate, --duration-s, --concurrency and --window-s must be positive")
    with tempfile.TemporaryDirectory(prefix="cn-load-") as tmp:
        os.chmod(tmp, 0o755)  # as root, the server runs as `postgres`, which must enter it
        db_url = args.db_url or start_postgres(Path(tmp))
        try:
            with own_node(extra=("--db-url", db_url)) as node:
                assert node.pid is not None
                cpu0 = sum(proc_cpu_s(node.pid))
                print(f"load: {args.rate:g} tasks/s for {args.duration_s:g} s on {db_url}")
                run = asyncio.run(drive(node, args))
                res = summary(run, node, db_url, args, sum(proc_cpu_s(node.pid)) - cpu0)
        finally:
            if not args.db_url:
                subprocess.run(
                    ["bash", str(REPO / "scripts" / "pg-down.sh"), str(Path(tmp) / "pg")],
                    capture_output=True,
                    check=False,
                )
    lat = res["latency_ms"]
    print(
        f"total: {res['acked']} acked, {res['tasks_per_s']} tasks/s, p50 {lat['p50']} ms,"
        f" p99 {lat['p99']} ms, max {lat['max']} ms, errors {sum(res['errors'].values())},"
        f" worst sender lag {res['worst_sender_lag_s']} s, node CPU {res['node_cpu_s']} s"
    )
    print(
        f"memory: RSS {res['rss_mib']}, trend over the second half"
        f" {res['rss_slope_mib_per_min_second_half']} MiB/min"
    )
    print(
        f"durable: {res['store_rows']} rows for {res['acked']} acked: "
        + ("ok" if res["durable"] else "MISMATCH")
    )
    if args.json:
        print(json.dumps(res))
    return 0 if res["durable"] and not res["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
