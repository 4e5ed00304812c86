"""Throwaway services for tests, started by the project's own scripts (Slurm, Ray).

The scripts share one protocol: ``script DIR PORT`` prints ``KEY=VALUE`` as its last line on
success, exits 3 with a one-line reason when the service cannot be had on this machine, and
fails with "in use" in its stderr when another process took the port first (then we retry).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOT_AVAILABLE = 3


def start_service(
    name: str, port: Callable[[], int], *, timeout_s: float, env: dict[str, str] | None = None
) -> tuple[str | None, str]:
    """Run ``scripts/<name>-up.sh DIR PORT``; stop it at exit with ``<name>-down.sh DIR``.

    Returns the value the script printed (``KEY=VALUE``, value only) and ``""``, or ``None``
    and the reason when the service is not available here.
    """
    up = REPO_ROOT / "scripts" / f"{name}-up.sh"
    down = REPO_ROOT / "scripts" / f"{name}-down.sh"

    def stop(directory: str) -> None:
        subprocess.run(["bash", str(down), directory], capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)

    last_error = ""
    for _ in range(3):  # a free port can be taken before the service binds it: retry
        directory = tempfile.mkdtemp(prefix=f"cn-{name}-")  # short: socket path limits
        try:
            proc = subprocess.run(
                ["bash", str(up), directory, str(port())],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env={**os.environ, **(env or {})},
                check=False,
            )
        except BaseException:
            stop(directory)
            raise
        if proc.returncode == 0:
            atexit.register(stop, directory)
            return proc.stdout.strip().splitlines()[-1].split("=", 1)[1], ""
        stop(directory)
        if proc.returncode == NOT_AVAILABLE:
            lines = proc.stderr.strip().splitlines() or [f"scripts/{up.name} exited 3"]
            return None, lines[-1].removeprefix(f"{up.name}: ")
        last_error = f"scripts/{up.name} exited {proc.returncode}:\n{proc.stderr}"
        if "in use" not in proc.stderr:
            break
    raise RuntimeError(f"could not start a test {name}: {last_error}")


class Once:
    """A service started at most once per test process (or taken from an environment
    variable), with the reason it could not be had."""

    def __init__(self, env_var: str, start: Callable[[], tuple[str | None, str]]) -> None:
        self._env_var = env_var
        self._start = start
        self._lock = threading.Lock()
        self._done = False
        self.value: str | None = None
        self.reason = ""

    def get(self) -> str | None:
        """The service's value (an address, a config path), or None when unavailable."""
        with self._lock:
            if not self._done:
                given = os.environ.get(self._env_var)
                self.value, self.reason = (given, "") if given else self._start()
                self._done = True
            return self.value
