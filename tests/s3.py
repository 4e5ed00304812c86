"""A real S3-compatible server for the test suite (helper module, not a test file).

``require_s3()`` gives the endpoint of a server that ``scripts/s3-up.sh`` starts once per
process in a temporary directory on a free port (``scripts/s3-down.sh`` stops it at exit).
Without a server it skips the test locally but fails it when ``CI=true``, so CI can never
pass by skipping the S3 tests. ``S3_ENV`` are the variables a client (or a gateway) needs.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from nodeproc import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
S3_UP = REPO_ROOT / "scripts" / "s3-up.sh"
S3_DOWN = REPO_ROOT / "scripts" / "s3-down.sh"
NOT_AVAILABLE = 3
S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "computenet-test",
    "AWS_SECRET_ACCESS_KEY": "computenet-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}

_lock = threading.Lock()
_endpoint: str | None = None
_reason = ""
_started = False


def _stop(directory: str) -> None:
    subprocess.run(["bash", str(S3_DOWN), directory], capture_output=True, timeout=60, check=False)
    shutil.rmtree(directory, ignore_errors=True)


def _start() -> tuple[str | None, str]:
    last = ""
    for _ in range(3):  # a free port can be taken before the server binds it: retry
        directory = tempfile.mkdtemp(prefix="cn-s3-")
        proc = subprocess.run(
            ["bash", str(S3_UP), directory, str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode == 0:
            atexit.register(_stop, directory)
            return proc.stdout.strip().splitlines()[-1], ""
        _stop(directory)
        if proc.returncode == NOT_AVAILABLE:
            return None, proc.stderr.strip()
        last = proc.stderr.strip()
    raise RuntimeError(f"could not start the test S3 server: {last}")


def require_s3() -> dict[str, str]:
    """Environment for the S3 server (endpoint and keys); skip, or fail under CI=true."""
    global _endpoint, _reason, _started
    with _lock:
        if not _started:
            _endpoint, _reason = _start()
            _started = True
    if _endpoint is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{_reason} (CI=true: the S3 staging tests must run)")
        pytest.skip(_reason)
    return {**S3_KEYS, "AWS_ENDPOINT_URL": _endpoint, "FSSPEC_S3_ENDPOINT_URL": _endpoint}
