"""Long-running commands: ``up`` (node + local gateway), ``node``, ``gateway``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from types import FrameType

import uvicorn
from platformdirs import user_data_dir

from computenet.errors import InvalidInput
from computenet.gateway.agent import Credential, GatewayAgent
from computenet.gateway.backends.local import LocalBackend
from computenet.gateway.backends.sandbox import Sandbox
from computenet.gateway.probe import gpu_indices, pools_from_probe, probe_host
from computenet.model.pool import Region
from computenet.model.urlpolicy import UrlPolicy
from computenet.node.app import create_app
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from computenet.node.tracing import json_logs_wanted, use_json_logs
from computenet.sdk.config import ClientConfig, config_path

log = logging.getLogger("computenet")


def default_data_dir() -> Path:
    """Where a node keeps its store unless told otherwise."""
    return Path(user_data_dir("computenet"))


def setup_logging(verbose: bool) -> None:
    """Concise logs on stderr; JSON lines when ``COMPUTENET_LOG_FORMAT=json``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if json_logs_wanted():
        use_json_logs()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def local_backend(
    state_dir: Path,
    label: str,
    cpu_cores: int | None,
    region: str,
    price_per_core_hour: Decimal,
    price_per_card_hour: Decimal,
    measure_budget_s: float | None = None,
    sandbox: Sandbox | None = None,
) -> LocalBackend:
    """Probe this host and describe it as the local backend's pools; with a budget, also
    measure its matmul throughput and declare the figures on the pools."""
    probe = probe_host()
    pools = pools_from_probe(
        probe,
        label=label,
        region=Region(code=region),
        cpu_cores=cpu_cores,
        price_per_core_hour=price_per_core_hour,
        price_per_card_hour=price_per_card_hour,
    )
    if measure_budget_s is not None:
        from computenet.gateway.measure import attach_measurements, measure_cpu, measure_gpu

        log.info("measuring this host's matmul throughput (up to %.0f s)", measure_budget_s)
        cpu = measure_cpu(budget_s=measure_budget_s / 4)
        gpu = measure_gpu(budget_s=measure_budget_s * 3 / 4)
        pools = attach_measurements(pools, cpu, gpu)
    return LocalBackend(state_dir, pools, gpu_indices(probe, pools), sandbox)


class _Server(uvicorn.Server):
    """uvicorn, stopping cleanly on SIGINT/SIGTERM without re-raising the signal afterwards
    (which would end the process with a traceback instead of shutting down in order)."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def declared_local_backend(
    state_dir: Path, pools_file: Path, sandbox: Sandbox | None = None
) -> LocalBackend:
    """The local backend with pools described by hand (a JSON list of pool specs) instead
    of probed: for hardware the probe does not know, and for tests. Jobs run on this host."""
    from computenet.cli.backends import read_pools_file

    return LocalBackend(state_dir, read_pools_file(pools_file), sandbox=sandbox)


def _uvicorn(
    app: object,
    host: str,
    port: int,
    on_exit: Callable[[], None],
    tls: tuple[Path, Path] | None = None,
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )
    return _Server(config, on_exit)


Say = Callable[[str], None]


def announce(rt: NodeRuntime, url: str, admin_token: str | None, show: Say) -> None:
    """Tell the operator where the node is and, once, its admin token."""
    show(f"ComputeNet {rt.settings.level} node '{rt.node_code}' at {url}")
    show(f"  console {url}/console/   (log in with an API token)")
    show(f"  native API {url}/api/v1   TES {url}/ga4gh/tes/v1   docs {url}/docs")
    show(f"  data directory {rt.settings.data_dir}")
    show(f"  {open_data(rt.settings.url_allow, rt.settings.url_deny)}")
    if admin_token:
        show(f"  admin token (shown once, stored hashed): {admin_token}")


def open_data(allow: tuple[str, ...], deny: tuple[str, ...]) -> str:
    """One line for the banner: what tasks' data URLs may reach beyond public addresses."""
    opened = ", ".join(allow) if allow else "nothing (public addresses only; no local files)"
    line = f"data URLs open to tasks beyond public addresses: {opened}"
    return line + (f"; denied: {', '.join(deny)}" if deny else "")


async def serve_up(
    settings: NodeSettings,
    host: str,
    port: int,
    backend: LocalBackend,
    gateway_dir: Path,
    show: Say,
    gateway_metrics_port: int | None = None,
) -> None:
    """Run a node and a local gateway in one process until interrupted; the node's own
    ``/metrics`` is on its API port, the gateway's on ``gateway_metrics_port`` if given."""
    rt = NodeRuntime(settings)
    boot = rt.bootstrap()
    url = f"http://{host}:{port}"
    enrol_token = None
    if Credential.load(gateway_dir / "credential.json") is None:
        _prefix, enrol_token = rt.enrol_provider("local", "this host")
    if boot.admin_token:
        path = ClientConfig(url=url, token=boot.admin_token).save()
        announce(rt, url, boot.admin_token, show)
        show(f"  client config written to {path}: `computenet submit -- echo hello` works now")
    else:
        announce(rt, url, None, show)
        show(f"  client config: {config_path()}")
    # The built-in gateway fetches from where the node runs: it has the node's URL policy.
    policy = UrlPolicy(settings.url_allow, settings.url_deny)
    agent = GatewayAgent(
        url, gateway_dir, backend, enrol_token=enrol_token, name="local", url_policy=policy
    )
    if gateway_metrics_port is not None:
        agent.metrics.serve(gateway_metrics_port)
    gateway_task: asyncio.Task[None] | None = None

    def on_exit() -> None:
        rt.drain()
        if gateway_task is not None:
            gateway_task.cancel()  # the gateway goes first, so no request of its is cut off

    server = _uvicorn(create_app(rt), host, port, on_exit)
    serving = asyncio.create_task(server.serve(), name="node")
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)  # the gateway connects once the node listens
    gateway_task = asyncio.create_task(agent.run(), name="gateway")
    try:
        await serving
    finally:
        gateway_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gateway_task


async def serve_node(settings: NodeSettings, host: str, port: int, show: Say) -> None:
    """Run a node until interrupted."""
    tls = None
    if settings.tls_cert is not None or settings.tls_key is not None:
        if settings.tls_cert is None or settings.tls_key is None:
            raise InvalidInput("HTTPS needs both --tls-cert and --tls-key")
        for path in (settings.tls_cert, settings.tls_key):
            if not path.is_file():
                raise InvalidInput(f"cannot read {path}: no such file")
        tls = (settings.tls_cert, settings.tls_key)
    rt = NodeRuntime(settings)
    boot = rt.bootstrap()
    announce(rt, f"{'https' if tls else 'http'}://{host}:{port}", boot.admin_token, show)
    await _uvicorn(create_app(rt), host, port, rt.drain, tls).serve()
