"""Backend overhead: submit→RUNNING and submit→COMPLETE through ComputeNet vs. each backend.

For every backend in ``--backends`` it starts what the backend needs (Slurm and Ray with the
project's scripts, for TES a second node with ``computenet up``) and a gateway for it, each
its own provider of one ``computenet node``. It then runs ``echo hi`` and ``sleep 1; echo hi``
``--runs`` times, interleaved: directly (``sh -c``, ``sbatch``, the Ray Jobs REST API, the
upstream node's TES API) and through ComputeNet (``POST /api/v1/tasks`` pinned to the pool),
both polled every 20 ms, and prints medians, p90s and the overhead ComputeNet adds. The
task's timeline (its events) shows where the ComputeNet side spends it. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import nodeproc  # type: ignore[import-not-found,unused-ignore]  # noqa: E402  (typed with MYPYPATH=tests)

BACKENDS = ("local", "slurm", "ray", "tes")
PROVIDER = {"local": "local", "slurm": "hpc", "ray": "ray", "tes": "upstream"}
COMMANDS = {"echo": "echo hi", "sleep": "sleep 1; echo hi"}
METRICS = (("echo", "complete"), ("sleep", "running"), ("sleep", "complete"))
POLL_S = 0.02
AIM_S = 0.5
# A random pause before each submission, so that it does not arrive in step with the
# gateway's poll (each run starts right after the previous one's final report otherwise).
JITTER_S = 0.3
# (success, started, ended) states of each interface; "started" means RUNNING or later.
TES_END = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
TES = ("COMPLETE", {"RUNNING", "PAUSED"}, TES_END)
SLURM = ("COMPLETED", {"RUNNING", "COMPLETING"}, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
RAY = ("SUCCEEDED", {"RUNNING"}, {"SUCCEEDED", "FAILED", "STOPPED"})
# Where each ComputeNet-side phase of a task's timeline goes, with today's settings.
CAUSES = {
    "submit→placed": "scheduler wake-up after a submission (>= 20 ms) and its pass",
    "placed→leased": "lease long-poll wake-up and the lease transaction",
    "leased→running": "backend submit, then the gateway's next status poll (poll_s=0.25)",
    "leased→done": "backend submit and the command, then the gateway's next poll",
    "running→done": "the command, then the gateway's next poll(s) (poll_s=0.25)",
}


class Unavailable(Exception):
    """A backend (or its gateway) cannot be started here."""


class TaskFailed(RuntimeError):
    """A task ended in another state than success."""


@dataclass
class Timing:
    """Seconds from submit to RUNNING-or-later and to the end; ComputeNet's phases."""

    running: float
    complete: float
    phases: dict[str, float] = field(default_factory=dict)


# A started backend: how to run a command on it directly, and the gateway's CLI arguments.
Harness = tuple[Callable[[str], Timing], list[str]]


class Clock:
    """The ``--max-seconds`` bound of the whole run."""

    def __init__(self, max_s: float) -> None:
        self.end = time.monotonic() + max_s

    def left(self) -> float:
        """Seconds left (negative once past)."""
        return self.end - time.monotonic()


def wait_states(
    state: Callable[[], str], states: tuple[str, set[str], set[str]], t0: float, clock: Clock
) -> Timing:
    """Poll ``state`` every 20 ms until it has ended; time RUNNING-or-later and the end."""
    ok, started, ended = states
    running: float | None = None
    while True:
        now_state, now = state(), time.perf_counter()
        if running is None and (now_state in started or now_state in ended):
            running = now - t0
        if now_state in ended:
            if now_state != ok:
                raise TaskFailed(f"ended {now_state}")
            return Timing(running or now - t0, now - t0)
        if clock.left() <= 0:
            raise TimeoutError("--max-seconds reached while a task ran")
        time.sleep(POLL_S)


def run_script(name: str, *args: str, timeout_s: float) -> str:
    """Run ``scripts/<name>``: its last stdout line, or Unavailable with its last stderr line."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=max(10.0, timeout_s),
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise Unavailable(f"scripts/{name} failed: {lines[-1]}")
    return (proc.stdout.strip().splitlines() or [""])[-1]


@contextlib.contextmanager
def local_harness(tmp: Path, clock: Clock) -> Iterator[Harness]:
    """This host: ``sh -c`` as a subprocess, RUNNING once spawned, COMPLETE once it exits."""

    def direct(cmd: str) -> Timing:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["sh", "-c", cmd], stdout=subprocess.DEVNULL)
        running = time.perf_counter() - t0
        if proc.wait(timeout=max(5.0, clock.left())) != 0:
            raise RuntimeError(f"sh -c {cmd!r} exited {proc.returncode}")
        return Timing(running, time.perf_counter() - t0)

    yield direct, ["--label", "host"]


@contextlib.contextmanager
def slurm_harness(tmp: Path, clock: Clock) -> Iterator[Harness]:
    """A throwaway Slurm (scripts/slurm-up.sh): ``sbatch --wrap``, ``scontrol show job``."""
    if shutil.which("sbatch") is None:
        raise Unavailable("no sbatch on PATH (Debian's slurmctld slurmd slurm-client munge)")
    directory = tempfile.mkdtemp(prefix="cn-slurm-")  # short: munge's socket path
    try:
        line = run_script("slurm-up.sh", directory, timeout_s=min(300, clock.left()))
        env = {**os.environ, "SLURM_CONF": line.removeprefix("SLURM_CONF=")}

        def job_state(job_id: str) -> str:
            args = ["scontrol", "show", "job", "-o", job_id]
            out = subprocess.run(args, env=env, capture_output=True, text=True).stdout
            found = re.search(r"JobState=(\S+)", out)
            return found.group(1) if found else ""

        def direct(cmd: str) -> Timing:
            t0 = time.perf_counter()
            args = ["sbatch", "--parsable", "--output=/dev/null", "--wrap", cmd]
            out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
            job_id = out.stdout.strip().split(";")[0]
            return wait_states(lambda: job_state(job_id), SLURM, t0, clock)

        yield direct, ["--backend", "slurm", "--slurm-conf", env["SLURM_CONF"]]
    finally:
        with contextlib.suppress(subprocess.SubprocessError, Unavailable):
            run_script("slurm-down.sh", directory, timeout_s=120)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def ray_harness(tmp: Path, clock: Clock) -> Iterator[Harness]:
    """A throwaway Ray head (scripts/ray-up.sh): ``POST /api/jobs/``, ``GET /api/jobs/{id}``."""
    directory = tempfile.mkdtemp(prefix="cn-ray-")  # short: Ray's socket paths
    try:
        line = run_script("ray-up.sh", directory, str(nodeproc.free_port()), timeout_s=clock.left())
        address = line.removeprefix("RAY_ADDRESS=")
        with httpx.Client(base_url=address, timeout=30) as http:

            def direct(cmd: str) -> Timing:
                # One CPU, as the gateway asks for a task with default resources.
                body = {"entrypoint": f"sh -c {shlex.quote(cmd)}", "entrypoint_num_cpus": 1}
                t0 = time.perf_counter()
                resp = http.post("/api/jobs/", json=body)
                resp.raise_for_status()
                path = f"/api/jobs/{resp.json()['submission_id']}"
                return wait_states(lambda: str(http.get(path).json()["status"]), RAY, t0, clock)

            yield direct, ["--backend", "ray", "--ray-address", address, "--label", "ray"]
    finally:
        with contextlib.suppress(subprocess.SubprocessError, Unavailable):
            run_script("ray-down.sh", directory, timeout_s=120)
        shutil.rmtree(directory, ignore_errors=True)


def tes_state(http: httpx.Client, path: str) -> Callable[[], str]:
    """A function reading a task's state at ``view=MINIMAL`` (TES and the native API)."""
    return lambda: str(http.get(path, params={"view": "MINIMAL"}).json()["state"])


@contextlib.contextmanager
def tes_harness(tmp: Path, clock: Clock) -> Iterator[Harness]:
    """An upstream node (``computenet up``, 2 cores): its own TES API, polled at MINIMAL."""
    port = nodeproc.free_port()
    try:
        upstream = nodeproc.start_node(tmp / "upstream", port, "--cpus", "2", up=True)
    except (RuntimeError, TimeoutError, OSError) as exc:
        raise Unavailable(f"the upstream node did not start: {str(exc)[-300:]}") from exc
    try:
        url, token = f"http://127.0.0.1:{port}", nodeproc.admin_token(upstream)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"{url}/ga4gh/tes/v1", headers=auth, timeout=30) as http:

            def direct(cmd: str) -> Timing:
                body = {"executors": [{"image": "alpine", "command": ["sh", "-c", cmd]}]}
                t0 = time.perf_counter()
                resp = http.post("/tasks", json=body)
                resp.raise_for_status()
                return wait_states(tes_state(http, f"/tasks/{resp.json()['id']}"), TES, t0, clock)

            yield (
                direct,
                ["--backend", "tes", "--tes-url", url, "--tes-token", token, "--label", "tes"],
            )
    finally:
        upstream.stop()


HARNESSES: dict[str, Callable[[Path, Clock], contextlib.AbstractContextManager[Harness]]] = {
    "local": local_harness,
    "slurm": slurm_harness,
    "ray": ray_harness,
    "tes": tes_harness,
}


def wait_pool(http: httpx.Client, prefix: str, gateway: nodeproc.Proc, clock: Clock) -> str:
    """The CPI of the gateway's pool once it is declared and healthy."""
    deadline = time.monotonic() + min(120.0, max(5.0, clock.left()))
    while time.monotonic() < deadline and gateway.popen.poll() is None:
        for pool in http.get("/api/v1/pools").json():
            if pool["cpi"].startswith(prefix + "/") and pool["health"] == "healthy":
                return str(pool["cpi"])
        time.sleep(0.1)
    tail = (gateway.output().strip().splitlines() or ["(no output)"])[-1]
    raise Unavailable(f"its gateway declared no healthy pool: {tail[-300:]}")


def phases(task: dict[str, Any]) -> dict[str, float]:
    """Seconds between the milestones of a task's timeline (its events)."""
    base = datetime.fromisoformat(task["created_at"])
    at = {"submit": 0.0}
    for event in task.get("events", []):
        state, placed = event["state"], event["message"].startswith("placed on")
        key = "placed" if placed else {"INITIALIZING": "leased", "RUNNING": "running"}.get(state)
        key = key or ("done" if state in TES_END else None)
        if key and key not in at:
            at[key] = (datetime.fromisoformat(event["at"]) - base).total_seconds()
    marks = [m for m in ("submit", "placed", "leased", "running", "done") if m in at]
    return {f"{a}→{b}": at[b] - at[a] for a, b in itertools.pairwise(marks)}


def through_computenet(http: httpx.Client, cpi: str, cmd: str, clock: Clock) -> Timing:
    """Submit ``sh -c cmd`` pinned to ``cpi``; poll MINIMAL every 20 ms; read its timeline."""
    body = {"executors": [{"command": ["sh", "-c", cmd]}], "placement": {"pool": cpi}}
    t0 = time.perf_counter()
    resp = http.post("/api/v1/tasks", json=body)
    resp.raise_for_status()
    path = f"/api/v1/tasks/{resp.json()['id']}"
    try:
        timing = wait_states(tes_state(http, path), TES, t0, clock)
    except TaskFailed as exc:
        events = http.get(path, params={"view": "BASIC"}).json().get("events", [])
        why = "; ".join(e["message"] for e in events[-3:])
        raise TaskFailed(f"{exc}: {why[-400:]}") from exc
    timing.phases = phases(http.get(path, params={"view": "BASIC"}).json())
    return timing


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile ``q`` (0..1), rounded to ms; None when empty."""
    ordered = sorted(values)
    i = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return round(ordered[i], 3) if ordered else None


def sub(a: float | None, b: float | None) -> float | None:
    """``a - b`` rounded to ms, None when either is missing."""
    return None if a is None or b is None else round(a - b, 3)


def secs(value: float | None, sign: str = "") -> str:
    """Seconds as text with three decimals; a dash when missing."""
    return "-" if value is None else f"{value:{sign}.3f}"


def summarize(per: dict[str, list[Timing]]) -> dict[str, Any]:
    """Median, p90 and added overhead of each metric; medians of ComputeNet's phases."""
    rows = []
    for variant, what in METRICS:
        row: dict[str, Any] = {"command": COMMANDS[variant], "until": what.upper()}
        for side in ("direct", "computenet"):
            values = [getattr(t, what) for t in per[f"{side}-{variant}"]]
            row[side] = {"median_s": quantile(values, 0.5), "p90_s": quantile(values, 0.9)}
            row["n"] = len(values)
        for q in ("median", "p90"):
            row[f"added_{q}_s"] = sub(row["computenet"][f"{q}_s"], row["direct"][f"{q}_s"])
        added = row["added_median_s"]
        row["meets_aim"] = None if added is None else added <= AIM_S
        rows.append(row)
    cn = {COMMANDS[v]: per[f"computenet-{v}"] for v in COMMANDS}
    names = {k for ts in cn.values() for t in ts for k in t.phases}
    timeline = {
        name: {
            cmd: quantile([t.phases[name] for t in ts if name in t.phases], 0.5)
            for cmd, ts in cn.items()
        }
        for name in sorted(names, key=lambda k: [*CAUSES, k].index(k))
    }
    return {"rows": rows, "computenet_phases_median_s": timeline}


def measure(name: str, node: str, token: str, tmp: Path, clock: Clock, runs: int) -> dict[str, Any]:
    """Start the backend and its gateway, run interleaved direct/ComputeNet pairs, stop both."""
    per: dict[str, list[Timing]] = {
        f"{s}-{v}": [] for s in ("direct", "computenet") for v in COMMANDS
    }
    stopped, failures = False, list[str]()
    with contextlib.ExitStack() as stack:
        direct, gateway_args = stack.enter_context(HARNESSES[name](tmp, clock))
        label = PROVIDER[name]
        gateway = nodeproc.start_gateway(node, token, tmp / f"gw-{name}", label, 2, *gateway_args)
        stack.callback(gateway.stop)
        auth = {"Authorization": f"Bearer {token}"}
        http = stack.enter_context(httpx.Client(base_url=node, headers=auth, timeout=30))
        cpi = wait_pool(http, f"cn/{label}", gateway, clock)
        sides: list[tuple[str, Callable[[str], Timing]]] = [
            ("direct", direct),
            ("computenet", lambda cmd: through_computenet(http, cpi, cmd, clock)),
        ]
        try:
            for i in range(-1, runs):  # run -1 warms both paths up and is not counted
                for variant, cmd in COMMANDS.items():
                    for side, run in sides if i % 2 == 0 else sides[::-1]:
                        if clock.left() <= 0:
                            raise TimeoutError
                        for _ in range(3):  # a failed run is counted, shown and redone
                            time.sleep(random.uniform(0, JITTER_S))
                            try:
                                timing = run(cmd)
                                break
                            except TaskFailed as exc:
                                failures.append(f"{side} {cmd!r}: {exc}")
                        else:
                            raise RuntimeError(f"three runs in a row failed: {failures[-1]}")
                        if i >= 0:
                            per[f"{side}-{variant}"].append(timing)
        except TimeoutError:
            stopped = True
    result = {"pool": cpi, "stopped_by_time_limit": stopped, "failures": failures}
    return result | summarize(per)


ROW = "  {:<18}{:<10}{:>16}{:>20}{:>16}  {}"


def report(res: dict[str, Any]) -> None:
    """Print the tables for people."""
    m = res["machine"]
    print(f"machine: {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, {m['system']}")
    print(f"date:    {res['date']}; {res['runs']} runs after 1 warm-up; client polls every 20 ms")
    if res.get("skipped_by_time_limit"):
        print(f"skipped: {', '.join(res['skipped_by_time_limit'])} (--max-seconds reached)")
    for name, b in res["backends"].items():
        print(f"\n{name} (pool {b['pool']}, {b['rows'][0]['n']} runs each; seconds)")
        print(
            ROW.format("command", "until", "direct med/p90", "ComputeNet med/p90", "added", "aim")
        )
        for r in b["rows"]:
            cells = [
                f"{secs(r[k]['median_s'])}/{secs(r[k]['p90_s'])}" for k in ("direct", "computenet")
            ]
            cells.append(f"{secs(r['added_median_s'], '+')}/{secs(r['added_p90_s'], '+')}")
            aim = {True: "ok", False: "OVER", None: "-"}[r["meets_aim"]] + f" (<{AIM_S})"
            print(ROW.format(r["command"], r["until"], *cells, aim))
        print("  ComputeNet timeline, medians from the task's events (echo hi / sleep 1; echo hi):")
        for phase, by_cmd in b["computenet_phases_median_s"].items():
            both = " / ".join(f"{secs(v):>5}" for v in by_cmd.values())
            print(f"    {phase:<16}{both}  {CAUSES.get(phase, '')}")
        for failure in b["failures"]:
            print(f"  FAILED and redone: {failure}")
        if b["stopped_by_time_limit"]:
            print("  note: stopped by --max-seconds; fewer runs than asked")


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python and OS of this machine."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model = found.group(1).strip() if found else model
    system, python = f"{platform.system()} {platform.release()}", platform.python_version()
    return {"cpus": os.cpu_count(), "cpu": model, "python": python, "system": system}


def main() -> int:
    """Parse the options, measure each backend in turn, print; stop everything at the end."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset")
    ap.add_argument("--runs", type=int, default=10, help="measured runs per command and path")
    ap.add_argument("--max-seconds", type=float, default=1200.0, help="bound of the whole run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    chosen = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not chosen or set(chosen) - set(BACKENDS):
        ap.error(f"--backends takes a comma-separated subset of {','.join(BACKENDS)}")
    if args.runs < 1 or args.max_seconds <= 0:
        ap.error("--runs and --max-seconds must be positive")
    clock = Clock(args.max_seconds)
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    res: dict[str, Any] = {"machine": machine(), "date": date, "runs": args.runs, "backends": {}}
    with tempfile.TemporaryDirectory(prefix="cn-overhead-") as tmp:
        port = nodeproc.free_port()
        try:
            node = nodeproc.start_node(Path(tmp) / "node", port)
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"backend_overhead: the node did not start: {str(exc)[-300:]}", file=sys.stderr)
            return 1
        try:
            token, url = nodeproc.admin_token(node), f"http://127.0.0.1:{port}"
            for name in chosen:
                if clock.left() <= 0:
                    res.setdefault("skipped_by_time_limit", []).append(name)
                    continue
                try:
                    res["backends"][name] = measure(name, url, token, Path(tmp), clock, args.runs)
                except Unavailable as exc:
                    rest = ",".join(b for b in chosen if b != name)
                    hint = f"; measure the others with --backends {rest}" if rest else ""
                    print(f"backend_overhead: {name} cannot start: {exc}{hint}", file=sys.stderr)
                    return 1
                except (RuntimeError, httpx.HTTPError, subprocess.SubprocessError) as exc:
                    print(f"backend_overhead: {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    return 1
        finally:
            node.stop()
    if args.json:
        print(json.dumps(res))
    else:
        report(res)
    return 1 if any(b["failures"] for b in res["backends"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
