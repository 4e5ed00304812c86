"""Issue 18, must-show 1: a national and two regional nodes on loopback, each with a root
gateway (replicas sandboxed: own uid, no network, reached only through the gateway's socket),
and the tinylm example deployed once at the national node with a replica in each region.
Clients of each region are served by their own region's replica (the split is measured);
under steady load, ``kill -9`` of one replica's gateway fails no idempotent request and new
requests reach the survivor within 5 s; load scales the service up and quiet scales it down."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from computenet.sdk.local_inputs import resolve_local_inputs
from nodeproc import CLI, Proc, admin_token, free_port, spawn, start_node

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SERVICE_FILE = ROOT / "examples" / "services" / "tinylm" / "service.yaml"
REGIONS = {"sh": "31", "gz": "52"}  # Shanghai, Guizhou
NATIONAL_REGION = "11"
FAILOVER_S = 5.0


@dataclass
class Node:
    name: str
    url: str
    code: str
    proc: Proc
    gateway: Proc
    gw_dir: Path


def _node(
    base: Path, name: str, region: str, parent: Node | None, parent_token: str | None
) -> tuple[Node, str]:
    port = free_port()
    args = ["--region", region, "--fed-timeout-s", "3", "--lease-ttl-s", "5",
            "--heartbeat-timeout-s", "3"]  # fmt: skip
    if parent is not None:
        assert parent_token is not None
        tok = httpx.post(
            f"{parent.url}/federation/v1/tokens",
            json={"label": name, "level": "regional"},
            headers=_auth(parent_token),
            timeout=10,
        ).json()["enrol_token"]
        args += ["--level", "regional", "--parent", parent.url, "--enrol-token", tok]
    proc = start_node(base / name, port, *args)
    url = f"http://127.0.0.1:{port}"
    token = admin_token(proc)
    code = httpx.get(f"{url}/federation/v1/node", timeout=5).json()["code"]
    enrol = httpx.post(
        f"{url}/api/v1/providers", json={"label": f"{name}p"}, headers=_auth(token), timeout=10
    ).json()["enrolment_token"]
    # Short: a unix socket's path (the replica's, under the gateway's state directory) must
    # fit in 108 bytes, which pytest's temporary directories leave too little room for.
    gw_dir = Path(tempfile.mkdtemp(prefix=f"cnr-{name}-", dir="/tmp"))
    # As root, replicas run sandboxed like any task (own uid, no network), reached only
    # through the gateway's socket; otherwise as the gateway's own user.
    sandbox = ["--sandbox-dir", str(gw_dir / "tasks")] if os.geteuid() == 0 else []
    gateway = spawn(
        [*CLI, "gateway", "--node", url, "--state-dir", str(gw_dir), "--cpus", "4",
         "--region", region, "--token", enrol, *sandbox],
        base / f"{name}-gw.log",
        env={"COMPUTENET_RUN_AS": ""},
    )  # fmt: skip
    return Node(name, url, code, proc, gateway, gw_dir), token


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _stop_runners(gw_dir: Path) -> None:
    """Runners outlive their gateway by design (a killed gateway's too): stop this test's."""
    for pid_file in (gw_dir / "jobs").glob("*/runner.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def _service() -> dict[str, Any]:
    spec = resolve_local_inputs(yaml.safe_load(SERVICE_FILE.read_text()), SERVICE_FILE.parent)
    # Each token takes 20 ms, so requests overlap and load shows as requests in flight.
    spec["executor"]["command"] = [*spec["executor"]["command"], "--delay-ms-per-token", "20"]
    spec["placement"] = {"regions": list(REGIONS.values())}
    spec["replicas"] = {
        "min": 2,
        "max": 3,
        "target_inflight": 1,
        "scale_up_window_s": 1,
        "scale_down_delay_s": 2,
    }
    return spec


@dataclass
class Shot:
    region: str
    sent: float
    status: int
    replica: str


def _ask(http: httpx.Client, national: str, key: str, region: str) -> Shot:
    sent = time.monotonic()
    try:
        r = http.post(
            f"{national}/services/v1/tinylm/v1/completions",
            json={"prompt": "the river", "max_tokens": 4, "seed": 1},
            headers={
                "Authorization": f"Bearer {key}",
                "X-Client-Region": region,
                "Idempotency-Key": uuid.uuid4().hex,  # so the router may retry it elsewhere
            },
        )
    except httpx.HTTPError:
        return Shot(region, sent, 0, "")
    ok = r.status_code == 200 and r.json()["choices"][0]["text"] is not None
    return Shot(
        region, sent, r.status_code if ok else -1, r.headers.get("x-computenet-replica", "")
    )


def _until_served(http: httpx.Client, national: str, key: str, region: str, by: set[str]) -> Shot:
    """Ask until a request from ``region`` is served by one of the replicas ``by`` (bounded:
    a replica passes its first health checks, a node passed over after a failed forward is
    tried again after 5 s); the last try either way."""
    deadline = time.monotonic() + 60
    while True:
        shot = _ask(http, national, key, region)
        if (shot.status == 200 and shot.replica in by) or time.monotonic() > deadline:
            return shot
        time.sleep(0.2)


def _wait(what: str, check: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            last = check()
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout_s} s (last: {last!r})")


def test_regional_routing_failover_and_autoscaling(tmp_path: Path) -> None:
    nodes: list[Node] = []
    try:
        national, ntoken = _node(tmp_path, "cn", NATIONAL_REGION, None, None)
        nodes.append(national)
        for name, region in REGIONS.items():
            nodes.append(_node(tmp_path, name, region, national, ntoken)[0])
        admin = _auth(ntoken)
        children = {n.code for n in nodes[1:]}

        def indexed() -> bool:
            rows = httpx.get(f"{national.url}/federation/v1/index", headers=admin, timeout=10)
            return {r["owner"] for r in rows.json() if r["health"] == "healthy"} >= children

        # Both regions' pools are in the national index before the service asks for them.
        _wait("both regional pools in the national index", indexed)
        r = httpx.post(
            f"{national.url}/api/v1/services", json=_service(), headers=admin, timeout=10
        )
        assert r.status_code == 201, r.text
        try:
            exercise(national.url, admin, r.json()["key"], nodes[1].gateway.kill9)
        except AssertionError as exc:
            logs = "\n".join(
                f"--- {n.name}\n{n.proc.output()[-1500:]}\n{n.gateway.output()[-1500:]}"
                for n in nodes
            )
            raise AssertionError(f"{exc}\n{logs}") from None
    finally:
        for n in nodes:
            n.gateway.stop()
            _stop_runners(n.gw_dir)
            n.proc.stop()
            shutil.rmtree(n.gw_dir, ignore_errors=True)


def exercise(n_url: str, admin: dict[str, str], key: str, kill_sh_gateway: Any) -> None:
    """The checks, against a national node whose service ``tinylm`` was just deployed."""

    def status() -> dict[str, Any]:
        got: dict[str, Any] = httpx.get(
            f"{n_url}/api/v1/services/tinylm", headers=admin, timeout=10
        ).json()
        return got

    def running_regions() -> dict[str, str]:
        reps = [x for x in status()["replicas"] if x["state"] == "RUNNING"]
        return {x["task_id"]: x["region"] for x in reps}

    try:
        _wait("a running replica in each region",
              lambda: set(running_regions().values()) == set(REGIONS.values()), 60)  # fmt: skip
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {status()}") from None
    region_of = running_regions()
    with httpx.Client(timeout=30) as http:
        for region in REGIONS.values():
            own = {t for t, r in region_of.items() if r == region}
            shot = _until_served(http, n_url, key, region, own)
            assert shot.status == 200 and shot.replica in own, f"{shot}\n{status()}"

        # 1. Each region's clients are served by their own region's replica.
        split: dict[str, Counter[str]] = {}
        for region in REGIONS.values():
            shots = [_ask(http, n_url, key, region) for _ in range(20)]
            assert all(s.status == 200 for s in shots), shots
            split[region] = Counter(region_of.get(s.replica, "?") for s in shots)
        print(f"split (client region -> served by replica region): {split}")
        for region, served in split.items():
            assert served[region] >= 19, split

    # 2. Steady load from both regions, then kill -9 Shanghai's gateway.
    shots: list[Shot] = []
    stop = threading.Event()

    def client(region: str) -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(2000):  # bounded; the test stops it first
                if stop.is_set():
                    return
                shots.append(_ask(http, n_url, key, region))

    workers = [
        threading.Thread(target=client, args=(region,), daemon=True)
        for region in [*REGIONS.values(), *REGIONS.values()]
    ]
    for w in workers:
        w.start()
    time.sleep(2.0)  # load before the kill (not a timeout being tested)
    kill_sh_gateway()
    killed = time.monotonic()
    try:
        # Load makes the autoscaler add a replica (3 x target in flight).
        _wait("scale-up under load", lambda: status()["desired"] == 3, 30)
        _wait("5 s of load after the kill", lambda: time.monotonic() - killed > 2 * FAILOVER_S)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    failed = [s for s in shots if s.status != 200]
    assert not failed, failed[:5]
    late = [s for s in shots if s.sent > killed + FAILOVER_S]
    survivor = {t for t, reg in region_of.items() if reg == REGIONS["gz"]}
    assert late and all(s.replica not in region_of or s.replica in survivor for s in late)
    after = Counter(region_of.get(s.replica, "new") for s in late)
    print(f"{len(shots)} requests, none failed; served after kill+5 s: {after}")

    # 3. Quiet: the service scales back down.
    _wait("scale-down when quiet", lambda: status()["desired"] < 3, 30)
