"""One control group per sandboxed task: limits on processes, memory and CPU, and a way to
find and kill every process the task started, wherever it went (``setsid``, double forks).

Both layouts are handled. On a cgroup v2 host (``/sys/fs/cgroup/cgroup.controllers`` exists,
systemd's default) a task's group is ``/sys/fs/cgroup/computenet/<key>`` with ``pids.max``,
``memory.max``, ``cpu.max`` and ``cgroup.kill``. On a cgroup v1 host (or a hybrid one, whose
cgroup2 mount has no controllers) the task gets ``computenet/<key>`` in each of the ``pids``,
``memory``, ``cpu`` and ``freezer`` hierarchies; the freezer stops the whole group before it
is killed, so nothing forks while we kill. A controller that is missing is skipped and its
limit does not hold (docs/security.md says which hold where).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "computenet"
V1_CONTROLLERS = ("pids", "memory", "cpu", "freezer")
CPU_PERIOD_US = 100_000
KILL_TIMEOUT_S = 1.0
# The first checks come soon: a sandbox's last process is usually just exiting (bwrap's
# outer process returns before its PID 1 is reaped), so waiting long would be waste.
KILL_FIRST_WAIT_S = 0.0005
KILL_MAX_WAIT_S = 0.02
_GIB = 1024**3


@dataclass(frozen=True)
class Limits:
    """What one task may use: processes (and threads), memory, CPU cores."""

    max_pids: int
    memory_bytes: int | None
    cpu_cores: float | None


def is_v2(root: Path = CGROUP_ROOT) -> bool:
    """True on a unified (cgroup v2) hierarchy."""
    return (root / "cgroup.controllers").exists()


@dataclass(frozen=True)
class TaskCgroup:
    """The control group(s) of one task, named after its job key (found again after a
    gateway restart from the key alone)."""

    key: str
    root: Path = CGROUP_ROOT

    def dirs(self) -> list[Path]:
        """Each directory of this task's group: one on v2, one per controller on v1."""
        if is_v2(self.root):
            return [self.root / PARENT / self.key]
        return [
            self.root / c / PARENT / self.key
            for c in V1_CONTROLLERS
            if (self.root / c / "cgroup.procs").exists()
        ]

    def create(self, limits: Limits) -> list[str]:
        """Make the group and set its limits; return the limits that could not be set."""
        missing: list[str] = []
        if is_v2(self.root):
            parent = self.root / PARENT
            parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):  # enable what the host delegates to us
                wanted = (self.root / "cgroup.subtree_control").read_text().split()
                (parent / "cgroup.subtree_control").write_text(
                    " ".join(f"+{c}" for c in ("pids", "memory", "cpu") if c in wanted)
                )
            group = parent / self.key
            group.mkdir(exist_ok=True)
            settings = {"pids.max": str(limits.max_pids)}
            if limits.memory_bytes:
                settings["memory.max"] = str(limits.memory_bytes)
                settings["memory.swap.max"] = "0"
            if limits.cpu_cores:
                settings["cpu.max"] = f"{int(limits.cpu_cores * CPU_PERIOD_US)} {CPU_PERIOD_US}"
            for name, value in settings.items():
                try:
                    (group / name).write_text(value)
                except OSError:
                    missing.append(name)
            return missing
        for d in self.dirs():
            d.mkdir(parents=True, exist_ok=True)
        v1 = {
            "pids": {"pids.max": str(limits.max_pids)},
            "memory": (
                {
                    "memory.limit_in_bytes": str(limits.memory_bytes),
                    # No swap beyond it either, as v2's memory.swap.max=0 (where swap is
                    # accounted at all: the file exists with swapaccount=1).
                    "memory.memsw.limit_in_bytes": str(limits.memory_bytes),
                }
                if limits.memory_bytes
                else {}
            ),
            "cpu": (
                {
                    "cpu.cfs_period_us": str(CPU_PERIOD_US),
                    "cpu.cfs_quota_us": str(int(limits.cpu_cores * CPU_PERIOD_US)),
                }
                if limits.cpu_cores
                else {}
            ),
        }
        for controller, settings in v1.items():
            for name, value in settings.items():
                try:
                    (self.root / controller / PARENT / self.key / name).write_text(value)
                except OSError:
                    missing.append(name)
        return missing

    def join(self) -> None:
        """Move the calling process into the group (called in the child before exec, so
        everything it starts is in the group from the first instruction)."""
        self.add(os.getpid())

    def add(self, pid: int) -> None:
        """Move process ``pid`` into the group (what it starts from then on is in it too)."""
        for d in self.dirs():
            with contextlib.suppress(OSError):
                (d / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        """Every process in the group now."""
        found: set[int] = set()
        for d in self.dirs():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return found

    def kill(self) -> None:
        """Kill every process in the group and wait until none is left (bounded)."""
        groups = self.dirs()
        if not groups or not any(d.exists() for d in groups):
            return
        if not self.pids():
            # Empty (the usual case after an executor): nothing in it can fork, so there is
            # nothing to freeze; freezing and thawing cost milliseconds per task start.
            return
        v2 = is_v2(self.root)
        freezer = None if v2 else self.root / "freezer" / PARENT / self.key
        if v2:
            with contextlib.suppress(OSError):
                (groups[0] / "cgroup.kill").write_text("1")
        elif freezer is not None and freezer.exists():
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("FROZEN")
        deadline = time.monotonic() + KILL_TIMEOUT_S
        wait_s = KILL_FIRST_WAIT_S
        while time.monotonic() < deadline:
            left = self.pids()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                with contextlib.suppress(OSError):  # frozen processes die only once thawed
                    (freezer / "freezer.state").write_text("THAWED")
            time.sleep(wait_s)
            wait_s = min(wait_s * 2, KILL_MAX_WAIT_S)
        if freezer is not None:
            with contextlib.suppress(OSError):  # the task's next executor joins this group
                (freezer / "freezer.state").write_text("THAWED")

    def oom_kills(self) -> int:
        """How many of the group's processes the kernel has killed for reaching its memory
        limit (v2 ``memory.events``, v1 ``memory.oom_control``; 0 where neither is there)."""
        if is_v2(self.root):
            path = self.root / PARENT / self.key / "memory.events"
        else:
            path = self.root / "memory" / PARENT / self.key / "memory.oom_control"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return 0
        for line in lines:
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        """Kill what is left, then delete the group."""
        self.kill()
        for d in self.dirs():
            with contextlib.suppress(OSError):
                d.rmdir()


def limits_for(resources: dict[str, object], max_pids: int) -> Limits:
    """The cgroup limits for a task with these TES ``resources``."""
    ram_gb = resources.get("ram_gb")
    cores = resources.get("cpu_cores")
    return Limits(
        max_pids=max_pids,
        memory_bytes=int(float(str(ram_gb)) * _GIB) if ram_gb else None,
        cpu_cores=float(str(cores)) if cores else None,
    )
