"""The ``computenet`` command line."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

from computenet.cli import billing, demo, federation, ops, reserve, sched, secrets, sim, tasks
from computenet.cli.output import console, fail
from computenet.errors import ComputeNetError
from computenet.gateway.backends.sandbox import (
    DEFAULT_SANDBOX_DIR,
    DEFAULT_UID_RANGE,
    choose_sandbox,
)
from computenet.model.urlpolicy import UrlPolicy

app = typer.Typer(
    name="computenet",
    help="ComputeNet: find, dispatch and pay for compute across owners, chips and regions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
tasks.register(app)
ops.register(app)
secrets.register(app)
billing.register(app)
reserve.register(app)
sched.register(app)
sim.register(app)
federation.register(app)
demo.register(app)

LOCAL_DATA = ("file:///", "127.0.0.0/8", "::1/128")
RunAs = Annotated[
    str | None,
    typer.Option(
        envvar="COMPUTENET_RUN_AS",
        help="user local tasks run as when the gateway is root [default: nobody]",
    ),
]
UidRange = Annotated[
    str,
    typer.Option(help="uids a root gateway runs tasks as, one per running task (FIRST-LAST)"),
]
SandboxDir = Annotated[
    Path, typer.Option(help="where local tasks get their own directories (gateway as root)")
]
DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="node store directory [default: user data dir]")
]


def _money(value: str, what: str) -> Decimal:
    try:
        out = Decimal(value)
    except InvalidOperation:
        fail(f"{what} must be a decimal number, got {value!r}", 2)
    if not out.is_finite() or out < 0:
        fail(f"{what} must be a non-negative number, got {value!r}", 2)
    return out


@app.command()
def up(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8750,
    code: Annotated[str, typer.Option(help="node code (root of its identifiers)")] = "cn",
    cpus: Annotated[int | None, typer.Option(min=1, help="CPU cores to offer")] = None,
    region: Annotated[str, typer.Option(help="GB/T 2260 region code of this host")] = "11",
    price_per_core_hour: Annotated[str, typer.Option(help="price of a core-hour")] = "0",
    measure: Annotated[
        bool, typer.Option("--measure", help="measure matmul throughput and declare it")
    ] = False,
    level: Annotated[str, typer.Option(help="national, regional or industry")] = "national",
    parent: Annotated[str | None, typer.Option(help="parent node URL (child nodes)")] = None,
    enrol_token: Annotated[
        str | None, typer.Option(help="child enrolment token from the parent (first start)")
    ] = None,
    run_as: RunAs = None,
    sandbox_dir: SandboxDir = DEFAULT_SANDBOX_DIR,
    uid_range: UidRange = DEFAULT_UID_RANGE,
    gateway_metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="serve the local gateway's Prometheus /metrics on loopback"
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start a node with an embedded SQLite store and a local gateway, in one process."""
    from computenet.cli import serve
    from computenet.node.settings import NodeSettings

    serve.setup_logging(verbose)
    base = data_dir or serve.default_data_dir()
    settings = NodeSettings(
        data_dir=base,
        node_code=code,
        level=level,
        public_url=f"http://{host}:{port}",
        parent_url=parent,
        enrol_token=enrol_token,
        region=region,
        # One user's node on one machine: its tasks may read local files and loopback
        # services. `computenet node` refuses both unless its operator allows them.
        url_allow=LOCAL_DATA,
    )
    backend = serve.local_backend(
        base / "gateway",
        "host",
        cpus,
        region,
        _money(price_per_core_hour, "--price-per-core-hour"),
        Decimal(0),
        40.0 if measure else None,
        choose_sandbox(run_as, sandbox_dir, uid_range),
    )
    _run(
        serve.serve_up(settings, host, port, backend, base / "gateway", _say, gateway_metrics_port)
    )


@app.command()
def node(
    data_dir: DataDir = None,
    db_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL, e.g. postgresql+psycopg://...")
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8750,
    code: Annotated[str, typer.Option(help="node code (root of its identifiers)")] = "cn",
    level: Annotated[str, typer.Option(help="national, regional or industry")] = "national",
    name: Annotated[str, typer.Option(help="display name")] = "ComputeNet node",
    lease_ttl_s: Annotated[float, typer.Option(min=1.0, help="task lease lifetime")] = 30.0,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate chain: serve HTTPS")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
    secrets_key_file: Annotated[
        Path | None,
        typer.Option(help="key for task secrets; replicas share one [default: in --data-dir]"),
    ] = None,
    rate_limit_per_s: Annotated[
        float, typer.Option(min=0.0, help="requests a second per token (0: no limit)")
    ] = 1000.0,
    url_allow: Annotated[
        list[str] | None,
        typer.Option(help="data URLs tasks may name: network, host or file:///tree/ (repeat)"),
    ] = None,
    url_deny: Annotated[
        list[str] | None, typer.Option(help="networks or hosts refused even when public")
    ] = None,
    parent: Annotated[str | None, typer.Option(help="parent node URL (child nodes)")] = None,
    enrol_token: Annotated[
        str | None, typer.Option(help="child enrolment token from the parent (first start)")
    ] = None,
    public_url: Annotated[
        str | None, typer.Option(help="URL other nodes reach this one at [default: listen URL]")
    ] = None,
    fed_timeout_s: Annotated[
        float, typer.Option(min=0.5, help="a silent child's pools turn unavailable after this")
    ] = 10.0,
    resolve_ttl_s: Annotated[
        float, typer.Option(min=0.0, help="how long answers from other nodes are cached")
    ] = 30.0,
    heartbeat_timeout_s: Annotated[
        float, typer.Option(min=1.0, help="a pool silent this long turns unhealthy")
    ] = 20.0,
    region: Annotated[str, typer.Option(help="GB/T 2260 region code of this node")] = "11",
    quality_sample_s: Annotated[
        float, typer.Option(min=0.1, help="how often pool health is sampled")
    ] = 10.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a node (no gateway): gateways connect to it with `computenet gateway`."""
    from computenet.cli import serve
    from computenet.node.settings import NodeSettings

    if level not in ("national", "regional", "industry"):
        fail(f"--level must be national, regional or industry, got {level!r}", 2)
    serve.setup_logging(verbose)
    settings = NodeSettings(
        data_dir=data_dir or serve.default_data_dir(),
        db_url=db_url,
        node_code=code,
        level=level,
        name=name,
        lease_ttl_s=lease_ttl_s,
        tls_cert=tls_cert,
        tls_key=tls_key,
        secrets_key_file=secrets_key_file,
        rate_limit_per_s=rate_limit_per_s,
        rate_limit_burst=max(1.0, 2 * rate_limit_per_s),
        url_allow=tuple(url_allow or ()),
        url_deny=tuple(url_deny or ()),
        public_url=public_url or f"{'https' if tls_cert else 'http'}://{host}:{port}",
        parent_url=parent,
        enrol_token=enrol_token,
        fed_timeout_s=fed_timeout_s,
        resolve_ttl_s=resolve_ttl_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
        region=region,
        quality_sample_s=quality_sample_s,
    )
    _run(serve.serve_node(settings, host, port, _say))


@app.command()
def gateway(
    node_url: Annotated[str, typer.Option("--node", help="URL of the node to serve")],
    state_dir: Annotated[Path, typer.Option(help="where the gateway keeps jobs and credential")],
    token: Annotated[
        str | None, typer.Option(help="one-time enrolment token (first start only)")
    ] = None,
    backend: Annotated[str, typer.Option(help="local, slurm, ray or tes")] = "local",
    label: Annotated[str, typer.Option(help="pool label (local, ray, tes)")] = "host",
    cpus: Annotated[int | None, typer.Option(min=1, help="CPU cores to offer")] = None,
    region: Annotated[str, typer.Option(help="GB/T 2260 region code")] = "11",
    price_per_core_hour: Annotated[str, typer.Option()] = "0",
    price_per_card_hour: Annotated[str, typer.Option()] = "0",
    name: Annotated[str | None, typer.Option(help="gateway name [default: hostname]")] = None,
    partition: Annotated[str | None, typer.Option(help="Slurm partition [default: all]")] = None,
    slurm_conf: Annotated[Path | None, typer.Option(help="slurm.conf to use")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray dashboard URL")] = None,
    tes_url: Annotated[str | None, typer.Option(help="TES service to forward to")] = None,
    tes_token: Annotated[str | None, typer.Option(help="bearer token for --tes-url")] = None,
    failover_after_s: Annotated[
        float, typer.Option(min=1.0, help="hand jobs back after the backend is down this long")
    ] = 15.0,
    measure: Annotated[
        bool, typer.Option("--measure", help="measure matmul throughput and declare it")
    ] = False,
    pools_file: Annotated[
        Path | None, typer.Option(help="local backend: declare these pools (JSON list) unprobed")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="serve Prometheus /metrics on loopback")
    ] = None,
    run_as: RunAs = None,
    sandbox_dir: SandboxDir = DEFAULT_SANDBOX_DIR,
    uid_range: UidRange = DEFAULT_UID_RANGE,
    url_allow: Annotated[
        list[str] | None,
        typer.Option(
            help="data URLs tasks may fetch or write from here, even when internal: network, "
            "host or file:///tree/ (repeat)"
        ),
    ] = None,
    url_deny: Annotated[
        list[str] | None, typer.Option(help="networks or hosts refused even when public")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a gateway beside a backend (this host, Slurm, Ray, or a TES service). Data URLs
    are checked again here, before each fetch or upload: internal addresses and local files
    are refused unless --url-allow opens them."""
    from computenet.cli import serve
    from computenet.gateway.agent import GatewayAgent
    from computenet.gateway.backends.base import Backend

    serve.setup_logging(verbose)
    chosen: Backend
    if pools_file is not None:
        chosen = serve.declared_local_backend(
            state_dir, pools_file, choose_sandbox(run_as, sandbox_dir, uid_range)
        )
    else:
        chosen = serve.make_backend(
            backend,
            state_dir,
            label=label,
            cpu_cores=cpus,
            region=region,
            price_per_core_hour=_money(price_per_core_hour, "--price-per-core-hour"),
            price_per_card_hour=_money(price_per_card_hour, "--price-per-card-hour"),
            partition=partition,
            slurm_conf=slurm_conf,
            ray_address=ray_address,
            tes_url=tes_url,
            tes_token=tes_token,
            measure_budget_s=40.0 if measure else None,
            sandbox=choose_sandbox(run_as, sandbox_dir, uid_range) if backend == "local" else None,
        )
    agent = GatewayAgent(
        node_url,
        state_dir,
        chosen,
        enrol_token=token,
        name=name,
        failover_after_s=failover_after_s,
        url_policy=UrlPolicy(tuple(url_allow or ()), tuple(url_deny or ())),
    )
    if metrics_port is not None:
        agent.metrics.serve(metrics_port)
    _run(agent.run())


@app.command("measure")
def measure_cmd(
    size: Annotated[int, typer.Option(min=64, help="CPU matrix size")] = 2048,
    budget_s: Annotated[float, typer.Option(min=1.0, help="time allowed in all")] = 40.0,
    gpu: Annotated[bool, typer.Option("--gpu/--no-gpu", help="also the first CUDA GPU")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Measure this host's dense matmul throughput (FP64/FP32 on CPU, FP16/FP32 on a GPU)."""
    from computenet.cli.output import print_json
    from computenet.gateway.measure import measure_cpu, measure_gpu

    results = [measure_cpu(size=size, budget_s=budget_s / 4 if gpu else budget_s)]
    found = measure_gpu(budget_s=budget_s * 3 / 4) if gpu else None
    if found is not None:
        results.append(found)
    if json_out:
        print_json([{k: str(v) for k, v in r.__dict__.items()} for r in results])
        return
    for r in results:
        figures = ", ".join(
            f"{name} {value} TFLOPS"
            for name, value in (
                ("FP64", r.fp64_tflops),
                ("FP32", r.fp32_tflops),
                ("FP16", r.fp16_tflops),
            )
            if value is not None
        )
        console.print(f"{r.device}: {figures} ({r.seconds:.1f} s; {r.method})", highlight=False)


@app.command("admin-token")
def admin_token(
    data_dir: DataDir = None, db_url: Annotated[str | None, typer.Option()] = None
) -> None:
    """Create a new admin token directly in a node's store (needs access to its data dir)."""
    from computenet.cli import serve
    from computenet.node.auth import new_token
    from computenet.store.db import Database, sqlite_url
    from computenet.store.migrate import upgrade

    base = data_dir or serve.default_data_dir()
    if db_url is None and not (base / "computenet.db").exists():
        fail(f"no node store in {base}")
    db = Database(db_url or sqlite_url(base))
    upgrade(db)
    console.print(new_token(db, "admin", "admin"), highlight=False)


def _say(line: str) -> None:
    print(line, flush=True)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run a server coroutine, on uvloop when it is installed (it is with uvicorn[standard])."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro)


def run() -> None:
    """Console-script entry point: every expected failure is one line and a non-zero exit."""
    try:
        app()
    except ComputeNetError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(str(exc))
    except Exception as exc:  # a bug: still one line for the user, never a traceback
        fail(f"unexpected {type(exc).__name__}: {exc} (please report this)")


if __name__ == "__main__":
    run()
