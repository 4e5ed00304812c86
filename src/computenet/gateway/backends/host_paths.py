"""Make a task's absolute paths real for an executor run on the host, without a container.

TES tasks name container paths (``/data/in.txt``, ``/tmp/run.sh``). Without a container the
runner keeps them under the job's work directory; arguments such as ``/tmp/run.sh`` would then
point at the host's own files. Where the runner may create a private mount namespace (root,
``unshare`` present), each top-level directory the task names is bind-mounted from the work
directory inside that namespace only, so the executor sees exactly the task's paths. System
directories are never covered. Elsewhere the executor runs as it is (relative paths work).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

# Covering these would break the executor's own programs and libraries.
SYSTEM_DIRS = frozenset(
    {
        "bin",
        "boot",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "run",
        "sbin",
        "sys",
        "usr",
        "var",
    }
)


@cache
def can_bind() -> bool:
    """True when a private mount namespace with bind mounts works here (probed once)."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        [
            unshare,
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind / / 2>/dev/null || mount --bind /tmp /tmp",
        ],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return probe.returncode == 0


def task_roots(spec: dict[str, Any], on_host_only: bool = True) -> list[str]:
    """Top-level directories the task's paths live in (``tmp`` for ``/tmp/x``), that exist
    on the host (unless ``on_host_only`` is False, for containers): a mount on the host needs
    a directory to cover, and we never create one at ``/``."""
    paths: list[str] = [str(i["path"]) for i in spec.get("inputs", [])]
    paths += [str(o.get("path_prefix") or o["path"]) for o in spec.get("outputs", [])]
    paths += [str(v) for v in spec.get("volumes", [])]
    for ex in spec.get("executors", []):
        paths += [str(ex[k]) for k in ("workdir", "stdin", "stdout", "stderr") if ex.get(k)]
    roots = set()
    for p in paths:
        parts = PurePosixPath(p).parts
        if p.startswith("/") and len(parts) > 2 and parts[1] not in SYSTEM_DIRS:
            roots.add(parts[1])
    if on_host_only:
        roots = {r for r in roots if Path("/" + r).is_dir()}
    return sorted(roots)


def wrap(command: list[str], work: Path, roots: Iterable[str]) -> list[str]:
    """``command`` run in a private mount namespace with each root bound from ``work``."""
    mounts = []
    for root in roots:
        source = work / root
        source.mkdir(parents=True, exist_ok=True)
        target = shlex.quote("/" + root)
        mounts.append(f"mount --bind {shlex.quote(str(source.resolve()))} {target}")
    if not mounts:
        return command
    script = " && ".join([*mounts, 'exec "$@"'])
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *command]
