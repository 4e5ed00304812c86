"""The bubblewrap (``bwrap``) command line that isolates one executor run on the host.

bwrap is started as root (the runner), builds the sandbox, then ``setpriv`` drops to the
task's own uid with no capabilities and ``no_new_privs`` before the task's command runs:

- new PID, IPC, UTS, network and (where possible) cgroup namespaces: the task sees only its
  own processes, and a network with nothing but its own loopback;
- a root file system of its own: system directories read-only, a private ``/tmp`` and
  ``/dev/shm``, a fresh ``/proc`` and minimal ``/dev``, the task's directory and its TES
  paths (``/data``, ...) bound read-write, and nothing else of the host (not ``/root``,
  ``/home``, ``/var``, the gateway's state nor other tasks' directories);
- ``--die-with-parent``: if the runner dies, the sandbox dies; when the task's first process
  ends, bwrap (PID 1 of the namespace) exits and the kernel kills every process left in it.
"""

from __future__ import annotations

import glob
import os
import shutil
from functools import cache
from pathlib import Path

# Read-only from the host: programs, libraries, configuration. /etc holds no secret a task
# user can read (``/etc/shadow`` is 0640 root:shadow).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# Always a clean, standard PATH: the gateway's own may hold directories the task user cannot
# enter, which turns "command not found" into "Permission denied".
TASK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GPU_DEVICES = ("/dev/nvidia*", "/dev/dri", "/dev/kfd")


@cache
def bwrap_path() -> str | None:
    """Where ``bwrap`` is, or None."""
    return shutil.which("bwrap") or (
        "/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None
    )


def _system_mounts() -> list[str]:
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def bwrap_command(
    command: list[str],
    *,
    work: Path,
    roots: list[str],
    chdir: str,
    uid: int,
    gid: int,
    devices: bool = False,
    info_fd: int | None = None,
    block_fd: int | None = None,
) -> list[str]:
    """``command`` run in a sandbox as ``uid``:``gid``, with the task directory ``work``
    bound at its own path and each TES root (``data`` for ``/data/x``) bound from
    ``work/<root>``; ``chdir`` is the working directory inside; ``devices`` binds the host's
    GPU device files (the task's environment says which cards it may use).

    ``info_fd``: bwrap writes ``{"child-pid": N}`` there once the sandbox exists (the pid a
    :mod:`.netbridge` enters); ``block_fd``: the sandbox waits, namespaces made, until that
    descriptor has data (or is closed) before the command runs, so that a bridge can be
    ready before the task's first instruction."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise FileNotFoundError("bwrap")
    argv = [
        bwrap,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",  # no ioctl(TIOCSTI) into a terminal outside
        "--hostname",
        "computenet-task",
        *(["--info-fd", str(info_fd)] if info_fd is not None else []),
        *(["--block-fd", str(block_fd)] if block_fd is not None else []),
        "--cap-add",
        "CAP_SETUID,CAP_SETGID",  # for setpriv below only; it drops them for good
        *_system_mounts(),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--tmpfs",
        "/dev/shm",
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
    ]
    if devices:
        argv += ["--ro-bind", "/sys", "/sys"]
        for pattern in GPU_DEVICES:
            for dev in sorted(glob.glob(pattern)):
                argv += ["--dev-bind", dev, dev]
    resolved = work.resolve()
    for root in roots:  # made and checked by the runner: real directories, not symlinks
        argv += ["--bind", str(resolved / root), "/" + root]
    # Last, so that a root such as /tmp cannot cover it (a sandbox dir under /tmp).
    argv += ["--bind", str(resolved), str(resolved)]
    argv += ["--chdir", chdir, "--"]
    drop = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]
    return [*argv, *drop, *command]
