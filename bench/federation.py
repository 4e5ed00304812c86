"""Federation benchmark: resolution latency, sync freshness, forwarding overhead, and the cost
of a 30,000-pool global index at the national node.

Part 1 starts a real four-node federation on loopback (national, Shanghai cn.31, Guizhou
cn.52, industry cn.ai), each node a real process with a real local gateway process.
Part 2 starts a fresh real national node and 30 *simulated* regional nodes: they are enrolled
for real (tokens, keys, certificates) and send real signed deltas of 1,000 pools each, but
they are threads of this script, not node processes. Everything is bounded (~2 minutes).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import computenet.gateway.backends as backends  # noqa: E402
import fedproc  # type: ignore[import-not-found,unused-ignore]  # noqa: E402  (typed with MYPYPATH=tests)
import nodeproc  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
from computenet.federation.enrol import enrol_with_parent  # noqa: E402
from computenet.federation.envelope import seal  # noqa: E402
from computenet.federation.keys import Identity  # noqa: E402

GZ_POOL = "cn.52/guizhou/host"


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 50) * 1000:7.1f} ms   p99 {pct(values, 99) * 1000:7.1f} ms"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- part 1: a real four-node federation ----------------------------------------------


def resolution(members: dict[str, Any], n: int) -> None:
    sh, ind = members["shanghai"], members["industry"]
    with httpx.Client(headers=sh.headers) as http:
        uncached = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = http.get(f"{sh.url}/api/v1/resolve/{GZ_POOL}")
            uncached.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json()["cached"] is False, r.text
    with httpx.Client(headers=ind.headers) as http:
        http.get(f"{ind.url}/api/v1/resolve/{GZ_POOL}")
        cached = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = http.get(f"{ind.url}/api/v1/resolve/{GZ_POOL}")
            cached.append(time.perf_counter() - t0)
            assert r.json()["cached"] is True, r.text
    print(f"resolution, uncached (cn.31 -> cn -> cn.52, {n}x): {ms(uncached)}")
    print(f"resolution, cached   (at cn.ai, {n}x):             {ms(cached)}")


def freshness(members: dict[str, Any], n: int) -> None:
    """A gateway changes its pool's price; how long until the national index shows it.
    (Its pool is in region 65, where no task of this bench asks to run: nobody leases it.)"""
    gz, nat = members["guizhou"], members["national"]
    tok = gz.post("/api/v1/providers", {"label": "bench"})["enrolment_token"]
    cred = httpx.post(f"{gz.url}/gateway/v1/enrol", json={"token": tok, "name": "bench"}).json()
    gw = {"Authorization": f"Bearer {cred['credential']}"}
    lags = []
    with httpx.Client() as http:
        for i in range(n):
            price = f"{i + 1}.5"
            pool = {
                "label": "fresh",
                "cpu_cores": 4,
                "memory_mib": 4096,
                "region": {"code": "65"},
                "price_per_core_hour": price,
            }
            t0 = time.perf_counter()
            r = http.put(f"{gz.url}/gateway/v1/pools", json={"pools": [pool]}, headers=gw)
            assert r.status_code == 200, r.text
            deadline = t0 + 10
            while time.perf_counter() < deadline:
                rows = http.get(
                    f"{nat.url}/federation/v1/index?owner=cn.52", headers=nat.headers
                ).json()
                if any(
                    x["record"]["spec"].get("price_per_core_hour") == price
                    for x in rows
                    if x["cpi"] == "cn.52/bench/fresh"
                ):
                    break
                time.sleep(0.01)
            lags.append(time.perf_counter() - t0)
    print(f"sync freshness, gateway change -> national index ({n}x): {ms(lags)}  (target < 2 s)")


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# The steps of a no-op task, in the order they happen (a step a run lacks is skipped):
# matched on the task's events (a mirrored one starts with "[code] ") and executor times.
STEPS = (
    "submitted",
    "placed",
    "forwarded",
    "leased",
    "executor start",
    "executor end",
    "COMPLETE at the running node (mirrored)",
    "COMPLETE recorded",
    "seen COMPLETE by the bench",
)


def _step(state: str, message: str) -> str | None:
    mirrored = message.startswith("[")
    words = message.split("] ", 1)[-1].split() if mirrored else message.split()
    if state == "COMPLETE":
        return STEPS[6] if mirrored else STEPS[7]
    first = words[0] if words else ""
    return first if first in ("submitted", "placed", "forwarded", "leased") else None


def timeline(task: dict[str, Any], seen_at: float) -> dict[str, float]:
    """When (epoch s) the task reached each of ``STEPS``, from its events (the first of each
    kind), its first executor's start and end, and when the bench saw it COMPLETE. Node,
    gateway and bench share this machine's clock."""
    at: dict[str, float] = {}
    for e in task.get("events") or []:
        step = _step(e["state"], e["message"])
        if step is not None:
            at.setdefault(step, _at(e["at"]))
    for a in task.get("attempts") or []:
        for ex in a["executors"][:1]:
            if ex.get("start_time"):
                at["executor start"] = _at(ex["start_time"])
            if ex.get("end_time"):
                at["executor end"] = _at(ex["end_time"])
    at[STEPS[-1]] = seen_at
    return at


def run_to_complete(
    http: httpx.Client, m: Any, regions: list[str]
) -> tuple[float, dict[str, float]]:
    """Submit a no-op task at ``m`` and wait for COMPLETE with one long-poll (``wait_s``), on
    one kept-alive connection (a fresh client per request costs more than the node's work).
    Returns the latency and the task's timeline (see ``timeline``)."""
    body = {
        "executors": [{"command": ["true"]}],
        "placement": {"regions": regions},
    }
    t0 = time.perf_counter()
    r = http.post(f"{m.url}/api/v1/tasks", json=body, headers=m.headers)
    r.raise_for_status()
    tid = r.json()["id"]
    # A long-poll: the node answers when the task is final (or after 30 s).
    url = f"{m.url}/api/v1/tasks/{tid}?view=MINIMAL&wait_s=30"
    if http.get(url, headers=m.headers, timeout=40).json()["state"] != "COMPLETE":
        task = m.get(f"/api/v1/tasks/{tid}?view=FULL")
        raise TimeoutError(f"task {tid} did not complete in 30 s: {task}")
    took, seen_at = time.perf_counter() - t0, time.time()
    full = http.get(f"{m.url}/api/v1/tasks/{tid}?view=FULL", headers=m.headers).json()
    return took, timeline(full, seen_at)


def breakdown(title: str, timelines: list[dict[str, float]]) -> None:
    """Print the p50 of each step: the time since the previous step the run has."""
    gaps: dict[str, list[float]] = {}
    for at in timelines:
        present = [(step, at[step]) for step in STEPS if step in at]
        for (_, t_prev), (step, t) in itertools.pairwise(present):
            gaps.setdefault(step, []).append(t - t_prev)
    print(f"  per-step breakdown, {title} (p50 of the time since the previous step):")
    for step in STEPS:
        if step in gaps:
            values = gaps[step]
            print(f"    -> {step:<40} {pct(values, 50) * 1000:7.1f} ms   ({len(values)} runs)")


def forwarding(members: dict[str, Any], n: int) -> None:
    sh, gz = members["shanghai"], members["guizhou"]
    with httpx.Client(timeout=10) as http:
        run_to_complete(http, sh, ["52"])  # warm-up: first connections, first lease
        direct_runs = [run_to_complete(http, gz, ["52"]) for _ in range(n)]
        forwarded_runs = [run_to_complete(http, sh, ["52"]) for _ in range(n)]
    direct = [x for x, _ in direct_runs]
    forwarded = [x for x, _ in forwarded_runs]
    extra = statistics.median(forwarded) - statistics.median(direct)
    print(f"submit -> COMPLETE at Guizhou directly   ({n}x): {ms(direct)}")
    breakdown("at Guizhou directly", [steps for _, steps in direct_runs])
    print(f"submit -> COMPLETE from Shanghai (fwd'd) ({n}x): {ms(forwarded)}")
    breakdown("from Shanghai (the timeline Shanghai shows)", [s for _, s in forwarded_runs])
    print(f"forwarding overhead (median difference): {extra * 1000:.0f} ms")


def runner_bytecode() -> str:
    """Whether the task runner's modules have up-to-date bytecode: without it (Python told
    not to write any, as some hosts do) every task's runner compiles them again."""
    stale = []
    for py in Path(backends.__file__).parent.glob("*.py"):
        pyc = Path(importlib.util.cache_from_source(str(py)))
        if not pyc.exists() or pyc.stat().st_mtime < py.stat().st_mtime:
            stale.append(py)
    if not stale:
        return "compiled"
    return f"NOT compiled ({len(stale)} stale modules: `make bench-federation` compiles them)"


def part1(tmp: Path, n: int) -> None:
    print("== part 1: real federation on loopback: 4 node processes + 4 gateway processes")
    # The local gateway sandboxes tasks (bwrap, a uid of its own, cgroup) only as root.
    mode = "sandboxed (root: bwrap)" if os.geteuid() == 0 else "unsandboxed (not root)"
    print(f"gateway mode: {mode}; load average {os.getloadavg()[0]:.2f} (1 min)")
    print(f"task runner bytecode: {runner_bytecode()}")
    members: dict[str, Any] = {}
    try:
        ttl0 = ("--resolve-ttl-s", "0")  # national and Shanghai never cache: uncached path
        members["national"] = fedproc.start_member(
            tmp, "national", None, "", "national", "11", *ttl0
        )
        nat = members["national"]
        members["shanghai"] = fedproc.start_member(
            tmp, "shanghai", nat, "31", "regional", "31", *ttl0
        )
        members["guizhou"] = fedproc.start_member(tmp, "guizhou", nat, "52", "regional", "52")
        members["industry"] = fedproc.start_member(tmp, "industry", nat, "ai", "industry", "44")
        for m in members.values():
            fedproc.wait_for(f"{m.name} index", lambda m=m: len(m.get("/federation/v1/index")) == 4)
        resolution(members, n * 10)
        freshness(members, n)
        forwarding(members, n)
    finally:
        for m in members.values():
            if m.gateway is not None:
                m.gateway.stop()
            m.proc.stop()


# ---- part 2: the global index at scale -------------------------------------------------


def records(code: str, n: int, version: int, changed: range | None = None) -> list[dict[str, Any]]:
    out = []
    for i in range(n) if changed is None else changed:
        out.append(
            {
                "cpi": f"{code}/dc{i // 100}/pool{i}",
                "node": code,
                "served_by_url": f"http://{code}.example",
                "health": "healthy",
                "running_tasks": version % 7,
                "spec": {
                    "label": f"pool{i}",
                    "cpu_cores": 64,
                    "memory_mib": 262144,
                    "region": {"code": code.split(".")[1][:2].ljust(2, "1")},
                    "price_per_core_hour": f"0.{version % 90 + 10}",
                },
            }
        )
    return out


class Sender:
    """A simulated regional node: a real identity, real signed deltas over HTTP."""

    def __init__(self, ident: Identity, url: str) -> None:
        self.ident, self.url = ident, url
        self.http = httpx.Client(timeout=30)
        self.seq = 0
        self.bytes_up = 0
        self.bytes_down = 0

    def push(self, recs: list[dict[str, Any]], full: bool) -> None:
        self.seq += 1
        msg = {"seq": self.seq, "full": full, "records": recs}
        assert self.ident.parent_code is not None  # enrolled under the national node
        env = seal(self.ident, "sync.push", msg, to=self.ident.parent_code)
        body = env.model_dump_json().encode()
        r = self.http.post(
            f"{self.url}/federation/v1/msg/sync.push",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200, r.text
        self.bytes_up += len(body)
        self.bytes_down += len(r.content)


def part2(tmp: Path, regions: int, pools: int, churn: int, seconds: float) -> None:
    print(
        f"== part 2: 1 real national node process, {regions} SIMULATED regional senders x "
        f"{pools} pools = {regions * pools} pools (real enrolment, real signed deltas)"
    )
    port = nodeproc.free_port()
    proc = nodeproc.start_node(tmp / "scale-national", port, "--fed-timeout-s", "30")
    url = f"http://127.0.0.1:{port}"
    try:
        token = nodeproc.admin_token(proc)
        head = {"Authorization": f"Bearer {token}"}
        rss0 = rss_mib(proc.popen.pid)
        senders = []
        for i in range(regions):
            label = f"{10 + i}"
            tok = httpx.post(f"{url}/federation/v1/tokens", json={"label": label}, headers=head)
            ident = enrol_with_parent(url, tok.json()["enrol_token"], f"http://sim{label}.example")
            senders.append(Sender(ident, url))
        t0 = time.perf_counter()
        for s in senders:
            s.push(records(s.ident.code, pools, 0), full=True)
        load_s = time.perf_counter() - t0
        held, after = 0, 0
        while page := httpx.get(
            f"{url}/federation/v1/index?limit=5000&after={after}", headers=head
        ).json():
            held, after = held + len(page), page[-1]["seq"]
        print(
            f"initial full sync of {regions * pools} pools: {load_s:.1f} s "
            f"({regions * pools / load_s:.0f} pools/s); national RSS {rss0:.0f} -> "
            f"{rss_mib(proc.popen.pid):.0f} MiB"
        )
        assert held == regions * pools, held
        up0 = sum(s.bytes_up for s in senders)
        cpu0 = cpu_s(proc.popen.pid)
        stop = time.perf_counter() + seconds
        errors: list[str] = []

        def steady(s: Sender, k: int) -> None:
            version = 1
            while time.perf_counter() < stop:
                start = (version * churn) % pools
                try:
                    s.push(
                        records(s.ident.code, pools, version, range(start, start + churn)), False
                    )
                except Exception as exc:  # count, keep going: the bench reports it
                    errors.append(str(exc))
                version += 1
                time.sleep(0.5)

        t1 = time.perf_counter()
        threads = [threading.Thread(target=steady, args=(s, k)) for k, s in enumerate(senders)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        took = time.perf_counter() - t1
        up = sum(s.bytes_up for s in senders) - up0
        cpu = cpu_s(proc.popen.pid) - cpu0
        deltas = sum(s.seq for s in senders) - regions
        print(
            f"steady state {took:.0f} s: {deltas} deltas ({deltas / took:.0f}/s), "
            f"{churn} changed pools per delta per region every 0.5 s, errors {len(errors)}"
        )
        print(
            f"sync bandwidth into the national node: {up / took / 1024:.0f} KiB/s "
            f"({up / max(1, deltas) / 1024:.1f} KiB per delta); national CPU "
            f"{cpu / took * 100:.0f}% of a core"
        )
        print(
            f"national node memory with {regions * pools} pools indexed: RSS "
            f"{rss_mib(proc.popen.pid):.0f} MiB"
        )
    finally:
        proc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=10, help="samples for freshness/forwarding")
    ap.add_argument("--regions", type=int, default=30)
    ap.add_argument("--pools", type=int, default=1000, help="pools per simulated region")
    ap.add_argument("--churn", type=int, default=10, help="pools changed per delta")
    ap.add_argument("--seconds", type=float, default=20.0, help="steady-state phase length")
    ap.add_argument("--skip-part1", action="store_true")
    ap.add_argument("--skip-part2", action="store_true", help="only the four-node federation")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cn-fed-bench-") as tmp:
        if not args.skip_part1:
            part1(Path(tmp), args.repeats)
        if not args.skip_part2:
            part2(Path(tmp), args.regions, args.pools, args.churn, args.seconds)


if __name__ == "__main__":
    main()
