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

import contextlib
import glob
import os
import shutil
import signal
import subprocess
from functools import cache
from pathlib import Path

from computenet.gateway.backends.netbridge import BridgeError, sandbox_pid

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
    # bwrap makes the directories above the task's own directory 0700 (root's), so the task
    # could open its files only by relative path; 0711 lets it traverse them, not list them.
    for above in reversed(resolved.parents[:-1]):
        argv += ["--perms", "0711", "--dir", str(above)]
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


class SandboxGate:
    """The two pipes that make bubblewrap tell its sandbox's pid (``--info-fd``) and hold
    the sandbox, namespaces made, before the task's command runs (``--block-fd``): the runner
    then puts the sandbox in the task's control group and sets its resource limits from
    outside (so the executor is started without a Python ``preexec_fn``, by the cheaper
    vfork), opens its egress bridge if any, and lets it go."""

    def __init__(self) -> None:
        self.info_r, self.info_w = os.pipe()
        self.block_r, self.block_w = os.pipe()
        self._open = {self.info_r, self.info_w, self.block_r, self.block_w}

    def child_fds(self) -> tuple[int, int]:
        """The descriptors bubblewrap inherits (keep their numbers: ``pass_fds``)."""
        return (self.info_w, self.block_r)

    def _close(self, fd: int) -> None:
        if fd in self._open:
            self._open.discard(fd)
            os.close(fd)

    def sandbox_pid(self) -> int:
        """Once bwrap is started: the pid of the sandbox's first process, every task
        process's ancestor (it waits until :meth:`release`)."""
        self._close(self.info_w)
        self._close(self.block_r)
        with os.fdopen(os.dup(self.info_r), "rb") as info:
            data = info.read()  # bwrap closes it once written; EOF at once if it failed
        self._close(self.info_r)
        try:
            return sandbox_pid(data)
        except BridgeError:
            raise OSError(f"bubblewrap did not start the sandbox (info: {data!r})") from None

    def release(self) -> None:
        """Let the sandbox run the task's command."""
        os.write(self.block_w, b"1")
        self._close(self.block_w)

    def abort(self, sandbox: subprocess.Popen[bytes] | None) -> None:
        """Something failed before :meth:`release`: kill the held sandbox, close the rest."""
        for fd in list(self._open):
            self._close(fd)
        if sandbox is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sandbox.pid, signal.SIGKILL)
            sandbox.wait()
