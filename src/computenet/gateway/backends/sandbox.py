"""Where and as whom the local backend runs a task, and the limits it runs under.

A gateway that runs as root runs each task as a uid of its own, taken from a configured range
(``--uid-range``, 61000-61999 by default, like HTCondor's slot users or systemd's DynamicUser):
taken when the task starts, given back when the gateway forgets it, never held by two tasks
at once. Its working directory lives under a directory every user may traverse but not list
(``--sandbox-dir``, mode 0711; each task's directory is 0700 and belongs to its uid), and it
runs inside bubblewrap (:mod:`.bwrap`) in a control group (:mod:`.cgroups`). A gateway that
runs as an ordinary user runs tasks as itself, since it cannot switch users; ``--run-as root``
keeps tasks as root on a trusted single-user host. Either way each executor gets resource
limits (no core dumps, a bound on open files, on the size of files it writes and, for CPU-only
work, on its address space) and the scrubbed environment of the runner.
"""

from __future__ import annotations

import logging
import os
import pwd
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from computenet.errors import InvalidInput
from computenet.gateway.backends.bwrap import bwrap_path

log = logging.getLogger("computenet.gateway")
DEFAULT_SANDBOX_DIR = Path("/var/tmp/computenet-tasks")
DEFAULT_UID_RANGE = "61000-61999"
# Processes and threads one task may have at once (cgroup pids.max, and RLIMIT_NPROC, which
# counts per uid and every task has its own): a fork bomb stops there.
TASK_MAX_PIDS = 512
MAX_OPEN_FILES = 65536
# CPU-only work gets an address-space limit of this many times its memory request: virtual
# memory runs well above resident memory (thread stacks, mapped libraries, allocator arenas).
# Accelerator work gets none: GPU drivers reserve address space far beyond any memory size.
ADDRESS_SPACE_FACTOR = 4
_GIB = 1024**3


@dataclass(frozen=True)
class Sandbox:
    """How a root gateway isolates tasks: the uids it hands out and where task directories
    live."""

    root: Path
    first_uid: int
    last_uid: int
    max_pids: int = TASK_MAX_PIDS

    def uids(self) -> range:
        """Every uid a task may get."""
        return range(self.first_uid, self.last_uid + 1)

    def for_task(self, uid: int) -> TaskSandbox:
        """The sandbox of one task that holds ``uid``."""
        return TaskSandbox(uid, uid, self.root, self.max_pids)


@dataclass(frozen=True)
class TaskSandbox:
    """One task's own user (its gid equals its uid) and where its directory lives."""

    uid: int
    gid: int
    root: Path
    max_pids: int = TASK_MAX_PIDS

    def to_json(self) -> dict[str, Any]:
        """For the job file the runner reads (and a restarted gateway reads back)."""
        return {"uid": self.uid, "gid": self.gid, "root": str(self.root), "max_pids": self.max_pids}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> TaskSandbox | None:
        """Back from the job file (None: run as the runner's own user, unisolated)."""
        if not data:
            return None
        return cls(
            int(data["uid"]),
            int(data["gid"]),
            Path(data["root"]),
            int(data.get("max_pids") or TASK_MAX_PIDS),
        )

    def workdir(self, key: str) -> Path:
        """A task's own working directory, made and handed to the task's user."""
        path = self.root / key
        path.mkdir(mode=0o700, exist_ok=True)
        os.lchown(path, self.uid, self.gid)
        return path

    def hand_over(self, path: Path) -> None:
        """Give the task's user everything under ``path`` (staged inputs, made before any of
        the task's code ran, so no path here is the task's)."""
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.lchown(name, self.uid, self.gid)


def parse_uid_range(text: str) -> tuple[int, int]:
    """``61000-61999`` as (61000, 61999); the range must hold no uid below 1000."""
    try:
        first, last = (int(x) for x in text.split("-", 1))
    except ValueError:
        raise InvalidInput(f"--uid-range {text!r}: expected FIRST-LAST, e.g. 61000-61999") from None
    if not 1000 <= first <= last < 2**31 - 1:
        raise InvalidInput(f"--uid-range {text!r}: need 1000 <= FIRST <= LAST")
    return first, last


def choose_sandbox(
    run_as: str | None, root: Path = DEFAULT_SANDBOX_DIR, uid_range: str = DEFAULT_UID_RANGE
) -> Sandbox | None:
    """The sandbox for this gateway: as root, a uid per task from ``uid_range``, isolated
    with bubblewrap; otherwise none.

    ``run_as="root"`` keeps tasks as root and unisolated, on purpose (a trusted, single-user
    machine); it is logged as a warning.
    """
    if os.geteuid() != 0:
        if run_as and run_as != pwd.getpwuid(os.geteuid()).pw_name:
            raise InvalidInput("--run-as needs the gateway to run as root")
        return None
    if run_as == "root":
        log.warning("tasks run as root (--run-as root): only for a trusted, single-user host")
        return None
    if run_as:
        raise InvalidInput(
            f"--run-as {run_as}: a root gateway runs each task as its own uid from --uid-range;"
            " --run-as only takes 'root' (a trusted, single-user host)"
        )
    first, last = parse_uid_range(uid_range)
    taken = [p.pw_name for p in pwd.getpwall() if first <= p.pw_uid <= last]
    if taken:
        raise InvalidInput(f"--uid-range {uid_range}: uids of existing users: {', '.join(taken)}")
    if bwrap_path() is None:
        raise InvalidInput(
            "bubblewrap (bwrap) is needed to isolate tasks: install it (apt-get install "
            "bubblewrap), or pass --run-as root on a trusted, single-user host"
        )
    root.mkdir(parents=True, exist_ok=True)
    os.chown(root, 0, 0)
    os.chmod(root, 0o711)  # others may reach their own directory, not list the rest
    return Sandbox(root, first, last)


def rlimits(resources: dict[str, Any], max_pids: int | None = None) -> list[tuple[int, int]]:
    """The resource limits (``RLIMIT_*``, value) for one executor of a task with these
    ``resources``; ``max_pids`` also bounds the processes of the (task's own) uid."""
    caps: list[tuple[int, int]] = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, MAX_OPEN_FILES),
    ]
    if max_pids is not None:
        caps.append((resource.RLIMIT_NPROC, max_pids))
    disk_gb = resources.get("disk_gb")
    if disk_gb:
        caps.append((resource.RLIMIT_FSIZE, int(float(disk_gb) * _GIB)))
    if not resources.get("accelerator"):
        ram_gb = float(resources.get("ram_gb") or 1.0)
        caps.append((resource.RLIMIT_AS, int(ram_gb * _GIB * ADDRESS_SPACE_FACTOR) + _GIB))
    return caps


def set_rlimits(pid: int, caps: list[tuple[int, int]]) -> None:
    """Set ``caps`` on the running process ``pid`` (``prlimit(2)``; what it starts inherits
    them), never above its hard limits."""
    for which, value in caps:
        _soft, hard = resource.prlimit(pid, which)
        limit = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.prlimit(pid, which, (limit, limit))


def limits(
    resources: dict[str, Any], max_pids: int | None = None, then: Callable[[], None] | None = None
) -> Callable[[], None]:
    """The resource limits of :func:`rlimits`, as a function the child process calls before
    it runs the command (then ``then``)."""
    caps = rlimits(resources, max_pids)

    def apply() -> None:
        for which, value in caps:
            _soft, hard = resource.getrlimit(which)
            limit = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (limit, limit))
        if then is not None:
            then()

    return apply
