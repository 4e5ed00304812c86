"""Submit benchmark: task submissions per second and their latency, over the real HTTP API.

By default it starts its own node (fresh temporary data dir, SQLite store, free loopback
port), sends a warm-up, then ``--tasks`` submissions with ``--concurrency`` requests in
flight, and checks that every acknowledged task is in the store. ``--url``/``--token``
bench a node that is already running instead (``--pid`` and ``--db`` add its CPU, memory
and row check). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BODY = json.dumps({"executors": [{"command": ["echo", "hi"]}]}).encode()
TOKEN_RE = re.compile(r"admin token \(shown once, stored hashed\): (cna_\S+)")


@dataclass
class Node:
    """The node under test: where it answers, and what this bench may inspect locally."""

    url: str
    token: str
    pid: int | None = None
    db: Path | None = None
    log: Path | None = None


@dataclass
class Phase:
    """What one load phase saw."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    timed_out: bool = False


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> str:
    """Wait until the node prints its admin token and answers ``/healthz``; return the token."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"node exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        found = TOKEN_RE.search(log.read_text(errors="replace"))
        try:
            if found and httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return found.group(1)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    sys.exit(f"node not ready after {timeout_s:.0f}s:\n{log.read_text(errors='replace')}")


@contextmanager
def own_node(
    timeout_s: float = 60.0,
    prepare: Callable[[Path], None] | None = None,
    extra: tuple[str, ...] = (),
) -> Iterator[Node]:
    """Start ``computenet node`` (with ``extra`` options) on a fresh data dir (first filled
    by ``prepare``, when given); always stop it (SIGINT, then kill)."""
    with tempfile.TemporaryDirectory(prefix="cn-bench-") as tmp:
        with socket.socket() as sock:  # a free loopback port
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        data, log = Path(tmp) / "data", Path(tmp) / "node.log"
        if prepare is not None:
            data.mkdir()
            prepare(data)
        cmd = [sys.executable, "-m", "computenet.cli.main", "node"]
        cmd += ["--data-dir", str(data), "--port", str(port), *extra]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            token = wait_ready(proc, url, log, timeout_s)
            db = None if "--db-url" in extra else data / "computenet.db"
            yield Node(url, token, proc.pid, db, log)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def proc_cpu_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def proc_mem_mib(pid: int) -> dict[str, float]:
    """Resident (``VmRSS``) and peak resident (``VmHWM``) memory of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def store_facts(db: Path) -> tuple[int, str]:
    """Rows in ``tasks`` and the journal mode, read through a read-only connection."""
    with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        count = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return int(count), str(mode)


async def load(node: Node, n: int, concurrency: int, max_s: float, run_id: str) -> Phase:
    """Send ``n`` submissions with ``concurrency`` in flight; stop early after ``max_s``."""
    phase, next_i = Phase(), 0
    headers = {"Authorization": f"Bearer {node.token}", "Content-Type": "application/json"}
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    start = time.perf_counter()
    deadline = start + max_s

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < n:
            if time.perf_counter() > deadline:
                phase.timed_out = True
                return
            i, next_i = next_i, next_i + 1
            t0 = time.perf_counter()
            try:
                key = {"Idempotency-Key": f"{run_id}-{i}"}
                r = await client.post("/api/v1/tasks", content=BODY, headers=key)
            except httpx.HTTPError as exc:
                phase.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                continue
            if r.status_code == 201:
                phase.latencies_ms.append((time.perf_counter() - t0) * 1000)
            else:
                phase.errors[f"HTTP {r.status_code}: {r.text[:200]}"] += 1

    # One single-connection client per worker: ``concurrency`` keep-alive connections in
    # all. A shared pool of that size costs the client twice the CPU per request (httpcore
    # scans and polls every pooled connection on each request), CPU the server then lacks.
    clients = [
        httpx.AsyncClient(base_url=node.url, headers=headers, limits=one, timeout=30)
        for _ in range(concurrency)
    ]
    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    phase.wall_s = time.perf_counter() - start
    return phase


def pct(sorted_ms: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of an ascending list; 0 when it is empty."""
    if not sorted_ms:
        return 0.0
    return round(sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))], 2)


def bench(node: Node, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, measure, and gather every number the report prints."""
    run_id = f"bench-{uuid.uuid4().hex[:12]}"
    before = store_facts(node.db)[0] if node.db else 0
    warm = asyncio.run(load(node, args.warmup, args.concurrency, args.max_seconds, run_id + "w"))
    cpu0 = proc_cpu_s(node.pid) if node.pid else (0.0, 0.0)
    client0 = time.process_time()
    main = asyncio.run(load(node, args.tasks, args.concurrency, args.max_seconds, run_id))
    client_cpu = time.process_time() - client0
    ok, lat = len(main.latencies_ms), sorted(main.latencies_ms)
    res: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": {k: getattr(args, k) for k in ("tasks", "concurrency", "warmup", "max_seconds")},
        "url": node.url,
        "ok": ok,
        "warmup_ok": len(warm.latencies_ms),
        "errors": dict(warm.errors + main.errors),
        "stopped_by_time_limit": main.timed_out or warm.timed_out,
        "wall_s": round(main.wall_s, 3),
        "tasks_per_s": round(ok / main.wall_s, 1) if main.wall_s else 0.0,
        "latency_ms": {k: pct(lat, q) for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
        "client_cpu_ms_per_submit": round(client_cpu * 1000 / ok, 3) if ok else None,
    }
    res["latency_ms"]["max"] = pct(lat, 1.0)
    if node.pid:
        user, system = (b - a for a, b in zip(cpu0, proc_cpu_s(node.pid), strict=True))
        res["server_cpu_s"] = {"user": round(user, 2), "system": round(system, 2)}
        res["server_cpu_ms_per_submit"] = round((user + system) * 1000 / ok, 3) if ok else None
        res["server_mem_mib"] = proc_mem_mib(node.pid)
    if node.db:
        rows, mode = store_facts(node.db)
        expected = before + res["warmup_ok"] + ok
        res["store"] = {"sqlite": str(node.db), "journal_mode": mode, "tasks_rows": rows}
        res["store"].update(expected_rows=expected, durable=rows == expected)
    return res


def report(res: dict[str, Any]) -> None:
    """Print the results for people."""
    m, p, store, lat = res["machine"], res["params"], res.get("store"), res["latency_ms"]
    print(f"machine: {m['cpus']} CPUs, Python {m['python']}; node {res['url']}")
    if store:
        print(f"store:   sqlite {store['sqlite']} (journal_mode={store['journal_mode']})")
    print("params:  " + " ".join(f"{k}={v}" for k, v in p.items()))
    print(f"result:  {res['ok']} submits in {res['wall_s']:.2f}s = {res['tasks_per_s']} tasks/s")
    print("latency: " + "  ".join(f"{k} {v:.2f} ms" for k, v in lat.items()))
    if cpu := res.get("server_cpu_s"):
        mem = res["server_mem_mib"]
        print(
            f"server:  {res['server_cpu_ms_per_submit']} CPU ms/submit (user {cpu['user']}s,",
            f"system {cpu['system']}s); RSS {mem['VmRSS']} MiB (peak {mem['VmHWM']})",
        )
    print(f"client:  {res['client_cpu_ms_per_submit']} CPU ms/submit")
    if store:
        verdict = "ok" if store["durable"] else "MISMATCH"
        print(f"durable: {store['tasks_rows']} rows, expected {store['expected_rows']}: {verdict}")
    if res["stopped_by_time_limit"]:
        print(f"note:    stopped by --max-seconds after {res['ok']} of {p['tasks']} submits")
    for what, count in res["errors"].items():
        print(f"error:   {count} x {what}")


def run(node: Node, args: argparse.Namespace) -> int:
    """Bench ``node``, print the results; 1 on any error or missing row, else 0."""
    res = bench(node, args)
    if args.json:
        print(json.dumps(res))
    else:
        report(res)
    failed = bool(res["errors"]) or res["ok"] == 0 or not res.get("store", {}).get("durable", 1)
    if failed and node.log:
        tail = node.log.read_text(errors="replace").splitlines()[-30:]
        print("node log (last lines):", *tail, sep="\n  ", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    """Parse the options and run the benchmark against its own node or ``--url``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=5000, help="measured submissions")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    ap.add_argument("--warmup", type=int, default=200, help="uncounted submissions first")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="time bound of each phase")
    ap.add_argument("--url", help="bench this running node instead of starting one")
    ap.add_argument("--token", help="bearer token for --url")
    ap.add_argument("--pid", type=int, help="server pid for --url (CPU and memory)")
    ap.add_argument("--db", type=Path, help="SQLite file of the --url node (row check)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.tasks < 1 or args.concurrency < 1 or args.warmup < 0 or args.max_seconds <= 0:
        ap.error("--tasks, --concurrency and --max-seconds must be positive")
    if args.url:
        if not args.token:
            ap.error("--url needs --token")
        return run(Node(args.url.rstrip("/"), args.token, args.pid, args.db), args)
    with own_node() as node:
        return run(node, args)


if __name__ == "__main__":
    sys.exit(main())
