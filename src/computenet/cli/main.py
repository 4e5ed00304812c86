"""The ``computenet`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from computenet import __version__
from computenet.cli import (
    billing,
    demo,
    federation,
    ops,
    reserve,
    sched,
    secrets,
    services,
    sim,
    tasks,
)
from computenet.cli.output import console, fail
from computenet.cli.preflight import port_free
from computenet.errors import ComputeNetError
from computenet.gateway.backends.sandbox import (
    DEFAULT_SANDBOX_DIR,
    DEFAULT_UID_RANGE,
    choose_sandbox,
)
from computenet.model.urlpolicy import UrlPolicy


class _Commands(TyperGroup):
    """Lists each command with its whole first paragraph, wrapped: click would cut it to the
    terminal's width with "...", hiding what the command does."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:  # click's, or typer's copy
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="computenet",
    cls=_Commands,
    help="ComputeNet: find, dispatch and pay for compute across owners, chips and regions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
tasks.register(app)
ops.register(app)
secrets.register(app)
services.register(app)
billing.register(app)
reserve.register(app)
sched.register(app)
sim.register(app)
federation.register(app)
demo.register(app)

UrlAllow = Annotated[
    list[str] | None,
    typer.Option(help="data URLs tasks may name: network, host or file:///tree/ (repeat)"),
]
UrlDeny = Annotated[
    list[str] | None, typer.Option(help="networks or hosts refused even when public")
]
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


def _version(value: bool) -> None:
    if value:
        print(f"computenet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = None,
) -> None:
    """ComputeNet: find, dispatch and pay for compute across owners, chips and regions."""


def _money(value: str, what: str) -> Decimal:
    try:
        out = Decimal(value)
    except InvalidOperation:
        fail(f"{what} must be a decimal number, got {value!r}", 2)
    if not out.is_finite() or out < 0:
        fail(f"{what} must be a non-negative number, got {value!r}", 2)
    return out


def _money_or_none(value: str | None, what: str) -> Decimal | None:
    return None if value is None else _money(value, what)


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
    url_allow: UrlAllow = None,
    url_deny: UrlDeny = None,
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

    port_free(host, port)
    if gateway_metrics_port is not None:
        port_free("127.0.0.1", gateway_metrics_port, "--gateway-metrics-port")

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
        # Tenants of this node are strangers too: like `computenet node`, no local files and
        # no internal addresses unless the operator opens them (the banner says what is open).
        url_allow=tuple(url_allow or ()),
        url_deny=tuple(url_deny or ()),
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
    url_allow: UrlAllow = None,
    url_deny: UrlDeny = None,
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
    port_free(host, port)
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
    backend: Annotated[
        str, typer.Option(help="local, slurm, ray or tes; each takes only its own options")
    ] = "local",
    label: Annotated[
        str | None, typer.Option(help="pool label (local: host, ray: ray, tes: tes)")
    ] = None,
    cpus: Annotated[int | None, typer.Option(min=1, help="CPU cores to offer (local, tes)")] = None,
    region: Annotated[str, typer.Option(help="GB/T 2260 region code")] = "11",
    price_per_core_hour: Annotated[
        str | None, typer.Option(help="[default: 0] (local, slurm, ray, tes)")
    ] = None,
    price_per_card_hour: Annotated[
        str | None, typer.Option(help="[default: 0] (local, slurm, ray, tes)")
    ] = None,
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
        Path | None,
        typer.Option(help="declare these pools (JSON list) unprobed (local; tes: one pool)"),
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
    """Run a gateway beside a backend (this host, Slurm, Ray, or a TES service).

    Data URLs are checked again here, before each fetch or upload: internal addresses and
    local files are refused unless --url-allow opens them."""
    from computenet.cli import serve
    from computenet.cli.backends import BackendOptions, build_backend
    from computenet.gateway.agent import GatewayAgent

    if metrics_port is not None:
        port_free("127.0.0.1", metrics_port, "--metrics-port")
    serve.setup_logging(verbose)
    options = BackendOptions(
        state_dir,
        region=region,
        label=label,
        cpus=cpus,
        price_per_core_hour=_money_or_none(price_per_core_hour, "--price-per-core-hour"),
        price_per_card_hour=_money_or_none(price_per_card_hour, "--price-per-card-hour"),
        measure=measure,
        pools_file=pools_file,
        partition=partition,
        slurm_conf=slurm_conf,
        ray_address=ray_address,
        tes_url=tes_url,
        tes_token=tes_token,
        sandbox=choose_sandbox(run_as, sandbox_dir, uid_range) if backend == "local" else None,
    )
    chosen = build_backend(backend, options)
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
        _main_once()
    except BrokenPipeError:
        # The reader went away (`computenet list | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None


def _main_once() -> None:
    try:
        code = app(standalone_mode=False, prog_name="computenet")
    except ComputeNetError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(str(exc))
    except typer.Abort:
        fail("aborted", 130)
    except Exception as exc:
        usage = _usage_error(exc)
        if usage is not None:
            fail(*usage)
        # a bug: still one line for the user, never a traceback
        fail(f"unexpected {type(exc).__name__}: {exc} (please report this)")
    if isinstance(code, int) and code:  # typer.Exit(n) is returned, not raised, here
        raise SystemExit(code)


def _usage_error(exc: Exception) -> tuple[str, int] | None:
    """A command-line mistake (click's usage errors, or typer's copy of them) as one line
    pointing at the command's help, and its exit code; None for anything else."""
    code = getattr(exc, "exit_code", None)
    if not hasattr(exc, "format_message") or not isinstance(code, int):
        return None
    if type(exc).__name__ == "NoArgsIsHelpError":  # `computenet` alone: the help it asked for
        print(exc.format_message())
        raise SystemExit(0)
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "computenet"
    return f"{exc.format_message()} (see `{where} --help`)", code


if __name__ == "__main__":
    run()
