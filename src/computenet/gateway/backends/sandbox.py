"""Where and as whom the local backend runs a task, and the limits it runs under.

A gateway that runs as root runs each task as an unprivileged user (``nobody`` unless
``--run-as`` names another), in a working directory of its own under a directory every user
may traverse but not list (``--sandbox-dir``, mode 0711; each task's directory is 0700 and
belongs to that user). A gateway that runs as an ordinary user runs tasks as itself, since it
cannot switch users. Either way each executor gets resource limits (no core dumps, a bound on
open files, on the size of files it writes and, for CPU-only work, on its address space) and
the scrubbed environment of the runner.
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

log = logging.getLogger("computenet.gateway")
DEFAULT_SANDBOX_DIR = Path("/var/tmp/computenet-tasks")
MAX_OPEN_FILES = 65536
# CPU-only work gets an address-space limit of this many times its memory request: virtual
# memory runs well above resident memory (thread stacks, mapped libraries, allocator arenas).
# Accelerator work gets none: GPU drivers reserve address space far beyond any memory size.
ADDRESS_SPACE_FACTOR = 4
_GIB = 1024**3


@dataclass(frozen=True)
class Sandbox:
    """The user tasks run as and the directory their working directories live under."""

    user: str
    uid: int
    gid: int
    root: Path

    def to_json(self) -> dict[str, Any]:
        """For the job file the runner reads."""
        return {"user": self.user, "uid": self.uid, "gid": self.gid, "root": str(self.root)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Sandbox | None:
        """Back from the job file (None: run as the runner's own user)."""
        if not data:
            return None
        return cls(str(data["user"]), int(data["uid"]), int(data["gid"]), Path(data["root"]))

    def workdir(self, key: str) -> Path:
        """A task's own working directory, made and handed to the task's user."""
        path = self.root / key
        path.mkdir(mode=0o700, exist_ok=True)
        os.chown(path, self.uid, self.gid)
        return path

    def hand_over(self, path: Path) -> None:
        """Give the task's user everything under ``path`` (staged inputs, copied files)."""
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.lchown(name, self.uid, self.gid)

    def drop_command(self) -> list[str]:
        """A prefix that runs a command as the task's user, for wrappers that must start as
        root (a private mount namespace) before giving the privilege up."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]


def choose_sandbox(run_as: str | None, root: Path = DEFAULT_SANDBOX_DIR) -> Sandbox | None:
    """The sandbox for this gateway: as root, an unprivileged user; otherwise none.

    ``run_as="root"`` keeps tasks as root, on purpose (a trusted, single-user machine); it is
    logged as a warning.
    """
    if os.geteuid() != 0:
        if run_as and run_as != pwd.getpwuid(os.geteuid()).pw_name:
            raise InvalidInput("--run-as needs the gateway to run as root")
        return None
    name = run_as or "nobody"
    if name == "root":
        log.warning("tasks run as root (--run-as root): only for a trusted, single-user host")
        return None
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise InvalidInput(f"--run-as {name}: no such user") from None
    if user.pw_uid == 0:
        raise InvalidInput(f"--run-as {name}: that user is root")
    root.mkdir(parents=True, exist_ok=True)
    os.chown(root, 0, 0)
    os.chmod(root, 0o711)  # others may reach their own directory, not list the rest
    return Sandbox(name, user.pw_uid, user.pw_gid, root)


def limits(resources: dict[str, Any]) -> Callable[[], None]:
    """The resource limits for one executor of a task with these ``resources``, as a
    function the child process calls before it runs the command."""
    caps: list[tuple[int, int]] = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, MAX_OPEN_FILES),
    ]
    disk_gb = resources.get("disk_gb")
    if disk_gb:
        caps.append((resource.RLIMIT_FSIZE, int(float(disk_gb) * _GIB)))
    if not resources.get("accelerator"):
        ram_gb = float(resources.get("ram_gb") or 1.0)
        caps.append((resource.RLIMIT_AS, int(ram_gb * _GIB * ADDRESS_SPACE_FACTOR) + _GIB))

    def apply() -> None:
        for which, value in caps:
            _soft, hard = resource.getrlimit(which)
            limit = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (limit, limit))

    return apply
