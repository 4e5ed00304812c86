"""What the service router adds: latency through one node and through a forward, requests/s
one node routes, and time to first byte of a streamed response (bench/README.md).

    .venv/bin/python bench/serve.py [--requests 2000] [--seconds 10] [--concurrency 64]

It starts, each in its own process on loopback: a replica (a minimal ASGI app under uvicorn on
a unix socket, so the replica is not what limits the numbers), a national node, a regional node
enrolled under it, and the regional node's gateway tunnel to the replica. The data path is the
production one (router, tunnel, gateway, socket; a signed forward between the nodes); only the
service directory is given on the command line instead of coming from a deployment, so the
bench measures routing alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvicorn

KEY = "sk-bench"
SERVICE = "echo"
STREAM_EVENTS = 5
STREAM_GAP_S = 0.02

# ---- the processes ----------------------------------------------------------------------


async def replica_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A replica: /health, /stream (server-sent events), anything else a small JSON answer."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/stream":
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(STREAM_EVENTS):
            event = f"data: {json.dumps({'i': i})}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await asyncio.sleep(STREAM_GAP_S)
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"ok":true,"usage":{"completion_tokens":1}}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def role_replica(args: argparse.Namespace) -> None:
    uvicorn.run(replica_app, uds=args.sock, log_level="warning", access_log=False)


def role_node(args: argparse.Namespace) -> None:
    from computenet.model.service import ServiceBinding, key_hash
    from computenet.model.task import TaskState
    from computenet.node.app import create_app
    from computenet.node.auth import new_token
    from computenet.node.runtime import NodeRuntime
    from computenet.node.settings import NodeSettings

    settings = NodeSettings(
        data_dir=Path(args.data),
        node_code="cn",
        level="regional" if args.parent else "national",
        region=args.region,
        public_url=f"http://127.0.0.1:{args.port}",
        parent_url=args.parent,
        enrol_token=args.enrol_token,
        rate_limit_per_s=0,
    )
    rt = NodeRuntime(settings)
    rt.bootstrap()
    prefix, _ = rt.enrol_provider("bench", "bench")
    gid = rt.dispatch.register_gateway(prefix, "bench-gw")
    binding = ServiceBinding(name=SERVICE, replica=0, key_hashes=[key_hash(KEY)], home_node="cn")

    class Placed:
        def __init__(self, node_code: str, gateway_id: str | None) -> None:
            self.task_id, self.version, self.replica = "bench.replica", "1", 0
            self.state, self.binding = TaskState.RUNNING, binding
            self.gateway_id, self.node_code, self.region = gateway_id, node_code, "31"
            self.price_per_card_hour, self.pool_cpi = Decimal("1"), ""

    class Listing:
        def replicas(self, name: str) -> list[Any]:
            if name != SERVICE:
                return []
            if child_code:  # the national node: the replica runs under its child
                return [Placed(child_code, None)]
            return [Placed(rt.node_code, gid)]

        def find(self, name: str) -> None:
            return None

    info = {"code": rt.node_code, "gateway_id": gid, "credential": new_token(rt.db, "gateway", gid)}
    child_code = None
    if not args.parent:
        info["enrol_token"], child_code = rt.federation.issue_token("sh", "regional", 3600)
    rt.metric_plane.directory = Listing()
    Path(args.info).write_text(json.dumps(info))
    app = create_app(rt)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def role_gateway(args: argparse.Namespace) -> None:
    from computenet.gateway.tunnel import ReplicaTarget, Tunnel

    targets = {"bench.replica": ReplicaTarget(Path(args.sock))}
    tunnel = Tunnel(args.node, lambda: args.credential, lambda: targets)
    try:
        import uvloop

        uvloop.run(tunnel.run())
    except ImportError:
        asyncio.run(tunnel.run())


# ---- measuring --------------------------------------------------------------------------


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def _latency(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    """Milliseconds per request, one at a time (after a warm-up)."""
    out = []
    headers = {"Authorization": f"Bearer {KEY}"}
    for i in range(n + 50):
        began = time.perf_counter()
        async with session.get(url, headers=headers) as r:
            await r.read()
            assert r.status == 200, (r.status, await r.text())
        if i >= 50:
            out.append((time.perf_counter() - began) * 1000)
    return out


async def _ttfb(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    """Milliseconds from sending a streamed request to its first body byte."""
    out = []
    headers = {"Authorization": f"Bearer {KEY}"}
    for _ in range(n):
        began = time.perf_counter()
        async with session.get(url, headers=headers) as r:
            await r.content.readany()
            out.append((time.perf_counter() - began) * 1000)
            await r.read()
    return out


async def _throughput(url: str, seconds: float, concurrency: int) -> tuple[float, int, int]:
    """Requests/s with ``concurrency`` in flight for ``seconds``; also ok and failed counts."""
    headers = {"Authorization": f"Bearer {KEY}"}
    done = failed = 0
    stop = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            nonlocal done, failed
            while time.perf_counter() < stop:
                try:
                    async with session.get(url, headers=headers) as r:
                        await r.read()
                        if r.status == 200:
                            done += 1
                        else:
                            failed += 1
                except aiohttp.ClientError:
                    failed += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = time.perf_counter() - began
    return done / took, done, failed


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(xs: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(xs), 3),
        "p99_ms": round(_pct(xs, 99), 3),
        "mean_ms": round(statistics.fmean(xs), 3),
    }


async def measure(
    direct_sock: str,
    local: str,
    forwarded: str,
    n: int,
    seconds: float,
    conc: int,
    pids: dict[str, int],
) -> dict[str, Any]:
    uds = aiohttp.UnixConnector(path=direct_sock)
    async with aiohttp.ClientSession(connector=uds) as direct, aiohttp.ClientSession() as s:
        d = await _latency(direct, "http://replica/x", n)
        loc = await _latency(s, f"{local}/services/v1/{SERVICE}/x", n)
        fwd = await _latency(s, f"{forwarded}/services/v1/{SERVICE}/x", n)
        ttfb_direct = await _ttfb(direct, "http://replica/stream", 50)
        ttfb_local = await _ttfb(s, f"{local}/services/v1/{SERVICE}/stream", 50)
        ttfb_fwd = await _ttfb(s, f"{forwarded}/services/v1/{SERVICE}/stream", 50)
    pids = {**pids, "load_generator": os.getpid()}
    cpu0 = {k: _cpu_s(p) for k, p in pids.items()}
    rps, ok, failed = await _throughput(f"{local}/services/v1/{SERVICE}/x", seconds, conc)
    used = {k: _cpu_s(p) - cpu0[k] for k, p in pids.items()}
    cpu = {k: round(v / seconds, 2) for k, v in used.items()}
    # CPU each process spent per routed request: what limits requests/s on a busy machine.
    per_request = {k: round(v / max(ok, 1) * 1000, 3) for k, v in used.items()}
    out: dict[str, Any] = {
        "direct": _summary(d),
        "through_one_node": _summary(loc),
        "forwarded": _summary(fwd),
        "throughput": {
            "requests_per_s": round(rps, 1),
            "ok": ok,
            "failed": failed,
            "concurrency": conc,
            "seconds": seconds,
            "cores_used": cpu,
            "cpu_ms_per_request": per_request,
        },
        "ttfb_ms_p50": {
            "direct": round(statistics.median(ttfb_direct), 3),
            "through_one_node": round(statistics.median(ttfb_local), 3),
            "forwarded": round(statistics.median(ttfb_fwd), 3),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
    }
    for k in ("through_one_node", "forwarded"):
        out[k]["added_p50_ms"] = round(out[k]["p50_ms"] - out["direct"]["p50_ms"], 3)
        out[k]["added_p99_ms"] = round(out[k]["p99_ms"] - out["direct"]["p99_ms"], 3)
    return out


# ---- orchestration ----------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(tmp: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (tmp / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, __file__, "--role", *args], stdout=log, stderr=subprocess.STDOUT
    )


def _wait(what: str, check: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = check()
        except (OSError, httpx.HTTPError, ValueError):
            got = None
        if got:
            return got
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="per latency series")
    ap.add_argument("--seconds", type=float, default=10.0, help="of the throughput phase")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--role", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        return _role(args.role)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as d:
        tmp = Path(d)
        sock = str(tmp / "replica.sock")
        try:
            procs.append(_spawn(tmp, "replica", "replica", "--sock", sock))
            _wait("the replica", lambda: Path(sock).exists())
            nport, cport = _free_port(), _free_port()
            nat_info, child_info = tmp / "national.json", tmp / "child.json"
            national = f"http://127.0.0.1:{nport}"
            child = f"http://127.0.0.1:{cport}"
            procs.append(
                _spawn(
                    tmp,
                    "national",
                    "node",
                    "--port",
                    str(nport),
                    "--data",
                    str(tmp / "n"),
                    "--region",
                    "11",
                    "--info",
                    str(nat_info),
                )
            )
            ninfo = _wait("the national node", lambda: json.loads(nat_info.read_text()))
            _wait("national up", lambda: httpx.get(f"{national}/healthz").status_code == 200)
            procs.append(
                _spawn(
                    tmp,
                    "child",
                    "node",
                    "--port",
                    str(cport),
                    "--data",
                    str(tmp / "c"),
                    "--region",
                    "31",
                    "--info",
                    str(child_info),
                    "--parent",
                    national,
                    "--enrol-token",
                    ninfo["enrol_token"],
                )
            )
            cinfo = _wait("the regional node", lambda: json.loads(child_info.read_text()))
            _wait("regional up", lambda: httpx.get(f"{child}/healthz").status_code == 200)
            procs.append(
                _spawn(
                    tmp,
                    "gateway",
                    "gateway",
                    "--node",
                    child,
                    "--sock",
                    sock,
                    "--credential",
                    cinfo["credential"],
                )
            )
            ok = {"Authorization": f"Bearer {KEY}"}
            _wait(
                "a routable replica",
                lambda: (
                    httpx.get(f"{child}/services/v1/{SERVICE}/x", headers=ok).status_code == 200
                ),
            )
            _wait(
                "the forward",
                lambda: (
                    httpx.get(f"{national}/services/v1/{SERVICE}/x", headers=ok).status_code == 200
                ),
            )
            pids = {"node": procs[2].pid, "gateway": procs[3].pid, "replica": procs[0].pid}
            result = asyncio.run(
                measure(sock, child, national, args.requests, args.seconds, args.concurrency, pids)
            )
        finally:
            for p in procs:
                p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0 if result["throughput"]["failed"] == 0 else 1


def _print(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"machine: {m['cpus']} CPUs, Python {m['python']}, load average {m['load_average']}")
    print(f"{'path':<18}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}")
    for k in ("direct", "through_one_node", "forwarded"):
        x = r[k]
        print(
            f"{k:<18}{x['p50_ms']:>9.3f}{x['p99_ms']:>9.3f}"
            f"{x.get('added_p50_ms', 0):>11.3f}{x.get('added_p99_ms', 0):>11.3f}"
        )
    t = r["throughput"]
    print(
        f"throughput through one node: {t['requests_per_s']} req/s "
        f"({t['ok']} ok, {t['failed']} failed, {t['concurrency']} in flight, {t['seconds']} s); "
        f"cores used: {t['cores_used']}"
    )
    print(f"CPU ms per request: {t['cpu_ms_per_request']}")
    f = r["ttfb_ms_p50"]
    print(
        f"time to first byte of a stream, p50 ms: direct {f['direct']}, "
        f"one node {f['through_one_node']}, forwarded {f['forwarded']}"
    )


def _role(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["replica", "node", "gateway"])
    ap.add_argument("--sock")
    ap.add_argument("--port", type=int)
    ap.add_argument("--data")
    ap.add_argument("--region", default="11")
    ap.add_argument("--info")
    ap.add_argument("--parent")
    ap.add_argument("--enrol-token")
    ap.add_argument("--node")
    ap.add_argument("--credential")
    a = ap.parse_args(argv)
    {"replica": role_replica, "node": role_node, "gateway": role_gateway}[a.role](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
