"""The TES backend under the shared contract suite (helper module, not a test file).

The remote TES service is a second ComputeNet node: ``computenet up`` (node + local gateway,
4 cores) started once per test process on a free port with its own data directory, and
stopped at exit. Its tasks run on this machine, so the suite can look for their processes.
Set ``COMPUTENET_TEST_TES_URL`` (and ``COMPUTENET_TEST_TES_TOKEN``) to use a running
TES service instead.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from backend_testing import BackendUnderTest, unavailable
from computenet.gateway.backends.tes import TesBackend
from computenet.model.pool import PoolSpec
from nodeproc import Proc, admin_token, free_port, start_node

URL_ENV = "COMPUTENET_TEST_TES_URL"
TOKEN_ENV = "COMPUTENET_TEST_TES_TOKEN"
UPSTREAM_CPUS = 4

_lock = threading.Lock()
_started = False
_upstream: tuple[str, str | None] | None = None
_reason = ""


def _stop(proc: Proc, directory: str) -> None:
    proc.stop()
    shutil.rmtree(directory, ignore_errors=True)


def _start() -> tuple[tuple[str, str | None] | None, str]:
    directory = tempfile.mkdtemp(prefix="cn-tes-upstream-")
    last = ""
    for _ in range(3):  # a free port can be taken before the node binds it: retry
        port = free_port()
        data = Path(directory) / f"node-{port}"
        try:
            proc = start_node(data, port, "--cpus", str(UPSTREAM_CPUS), up=True)
            token = admin_token(proc)
        except (RuntimeError, TimeoutError, OSError) as exc:
            last = str(exc)
            continue
        atexit.register(_stop, proc, directory)
        return (f"http://127.0.0.1:{port}", token), ""
    shutil.rmtree(directory, ignore_errors=True)
    return None, f"could not start an upstream ComputeNet node: {last[-2000:]}"


def upstream() -> tuple[str, str | None]:
    """URL and token of the upstream TES service; skips (fails under CI=true) without one."""
    global _started, _upstream, _reason
    with _lock:
        if not _started:
            if os.environ.get(URL_ENV):
                _upstream, _reason = (os.environ[URL_ENV], os.environ.get(TOKEN_ENV)), ""
            else:
                _upstream, _reason = _start()
            _started = True
    if _upstream is None:
        unavailable(f"TES upstream not available: {_reason}")
    return _upstream


@contextlib.contextmanager
def backend_under_test(tmp_path: Path) -> Iterator[BackendUnderTest]:
    """A TesBackend in ``tmp_path`` forwarding to the session's upstream node."""
    url, token = upstream()
    pool = PoolSpec(label="tes", backend="tes", cpu_cores=UPSTREAM_CPUS, memory_mib=4096)
    backend = TesBackend(tmp_path / "tes-gateway", url=url, token=token, pool=pool)
    try:
        yield BackendUnderTest(
            backend=backend,
            pool_cpi="cn/upstream/tes",
            gpu_pool_cpi=None,
            processes_visible=True,
        )
    finally:
        backend.close()
