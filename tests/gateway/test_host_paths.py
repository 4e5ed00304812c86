"""Host executors see the task's absolute paths through private bind mounts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from computenet.gateway.backends.host_paths import can_bind, task_roots, wrap


def test_roots_are_existing_non_system_top_dirs() -> None:
    spec = {
        "inputs": [{"path": "/tmp/run.sh"}, {"path": "/usr/lib/x"}, {"path": "rel/x"}],
        "outputs": [{"path": "/nonexistent-root-dir/out", "path_prefix": None}],
        "volumes": ["/tmp"],  # a root itself is not a directory under a root
        "executors": [{"workdir": "/tmp/w", "stdout": "/etc/out"}],
    }
    assert task_roots(spec) == ["tmp"]


def test_wrap_binds_the_work_dir_over_the_task_root(tmp_path: Path) -> None:
    if not can_bind():
        pytest.skip("no private mount namespace here (needs root and unshare)")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "marker.txt").write_text("in the task's /tmp")
    cmd = wrap(["cat", "/tmp/marker.txt"], tmp_path, ["tmp"])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == "in the task's /tmp"
    assert not Path("/tmp/marker.txt").exists()  # the host's /tmp was never touched
    assert wrap(["true"], tmp_path, []) == ["true"]
