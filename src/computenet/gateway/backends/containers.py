"""Running an executor's image with the pool's container runtime.

A pool declares the runtimes its machines have (``software.container_runtimes``, found by
the gateway's probe). A task executor with an ``image`` runs in it with the first runtime the
pool declares, in the order of :data:`CONTAINER_RUNTIMES`; with none it runs on the host and
the task's system logs say so. The task's directories (the job's ``work/<root>``) are bound at
the task's paths, so inputs, outputs and ``workdir`` mean the same inside the container.

With a sandbox (a root gateway) podman and docker run the image with the same guarantees as
bubblewrap on the host: the task's own uid, no network, no capabilities, ``no-new-privileges``,
a read-only image with a private ``/tmp``, and the task's limits on processes, memory and CPU
(the runtime's own cgroup). On a cgroup v1 or hybrid host podman needs ``runc`` (Debian's
default ``crun`` refuses hybrid cgroups) and, without systemd, the ``cgroupfs`` manager.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import subprocess
from pathlib import Path

from computenet.gateway.backends.cgroups import Limits, is_v2
from computenet.gateway.backends.sandbox import TaskSandbox

# In order of preference. Defined here, not in the probe, so that a task's runner (a fresh
# process per task) need not import the probe and pydantic: that doubled a task's start.
CONTAINER_RUNTIMES: tuple[str, ...] = ("apptainer", "singularity", "podman", "docker")
# Runtimes whose containers can be made, bridged into, then started (an egress allow-list):
# podman's ``init`` makes the namespaces without starting the command; docker has no ``init``,
# so its containers keep ``--network none`` and nothing else.
HOLDING_RUNTIMES = ("podman",)
# Explicit limits: without them runc fails to set RLIMIT_NOFILE/RLIMIT_NPROC above the host's.
CONTAINER_MAX_OPEN_FILES = 20000


def choose_runtime(declared: list[str] | tuple[str, ...]) -> str | None:
    """The runtime a pool's images run with: the first we support that the pool declares."""
    return next((rt for rt in CONTAINER_RUNTIMES if rt in declared), None)


def container_command(
    runtime: str,
    image: str,
    command: list[str],
    work: Path,
    roots: list[str],
    workdir: str | None,
    env: dict[str, str],
    sandbox: TaskSandbox | None = None,
    limits: Limits | None = None,
    name: str | None = None,
    held: bool = False,
) -> list[str]:
    """The argv that runs ``command`` in ``image`` with ``runtime``; ``roots`` are the
    top-level task directories (``data`` for ``/data/x``) bound from ``work``; with a
    ``sandbox``, as its unprivileged user, isolated, under ``limits``; ``name`` names the
    container so that it can be removed whatever happens to its client; ``held`` (podman, with a
    ``name``): ``create`` it rather than run it, for :func:`hold_container`."""
    binds = [f"{(work / r).resolve()}:/{r}" for r in roots]
    if runtime in ("apptainer", "singularity"):
        argv = [runtime, "exec", "--cleanenv", "--containall"]
        for b in binds:
            argv += ["--bind", b]
        if workdir:
            argv += ["--pwd", workdir]
        for k, v in sorted(env.items()):
            argv += ["--env", f"{k}={v}"]
        source = image if "://" in image or image.endswith(".sif") else f"docker://{image}"
        # Apptainer runs the container as whoever starts it.
        drop = (
            ["setpriv", f"--reuid={sandbox.uid}", f"--regid={sandbox.gid}", "--clear-groups", "--"]
            if sandbox
            else []
        )
        return [*drop, *argv, source, *command]
    argv = [runtime]
    if runtime == "podman":
        argv += podman_global_options()
    argv += ["create", "-i"] if held else ["run", "--rm", "-i"]
    if name:
        argv += ["--name", name]
    if sandbox is not None:
        argv += _isolation(sandbox, limits)
    for b in binds:
        argv += ["-v", b]
    if workdir:
        argv += ["-w", workdir]
    for k, v in sorted(env.items()):
        argv += ["-e", f"{k}={v}"]
    return [*argv, image, *command]


def podman_global_options() -> list[str]:
    """Options podman needs on this host: ``runc`` where cgroups are v1 or hybrid, and the
    ``cgroupfs`` manager where systemd does not run."""
    argv = []
    if not is_v2() and shutil.which("runc"):
        argv += ["--runtime", "runc"]
    if not Path("/run/systemd/system").is_dir():
        argv += ["--cgroup-manager", "cgroupfs"]
    return argv


def _isolation(sandbox: TaskSandbox, limits: Limits | None) -> list[str]:
    nofile = CONTAINER_MAX_OPEN_FILES
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY:
        nofile = min(nofile, hard)
    pids = limits.max_pids if limits else sandbox.max_pids
    argv = [
        "--user",
        f"{sandbox.uid}:{sandbox.gid}",
        "--network",
        "none",
        "--cap-drop",
        "all",
        "--security-opt",
        "no-new-privileges",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,mode=1777",
        "--pids-limit",
        str(pids),
        "--ulimit",
        f"nofile={nofile}:{nofile}",
        "--ulimit",
        f"nproc={pids}:{pids}",
    ]
    if limits and limits.memory_bytes:
        argv += ["--memory", str(limits.memory_bytes)]
    if limits and limits.cpu_cores:
        argv += ["--cpus", str(limits.cpu_cores)]
    return argv


def hold_container(runtime: str, create: list[str], name: str) -> tuple[int, list[str]]:
    """Create a container with ``create`` (from :func:`container_command` with ``held``)
    and initialise it: its namespaces exist but its command has not started. Return the pid
    of its first process (whose network namespace a bridge may enter) and the command that
    starts it attached (stdin, stdout, stderr), the executor's process."""
    base = [runtime, *podman_global_options()]
    inspect = [*base, "inspect", "--format", "{{.State.Pid}}", name]
    try:
        for argv in (create, [*base, "init", name]):
            subprocess.run(argv, capture_output=True, timeout=120, check=True)
        done = subprocess.run(inspect, capture_output=True, text=True, timeout=60, check=True)
        pid = int(done.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        why = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        raise OSError(f"cannot prepare the container: {why}") from None
    return pid, [*base, "start", "--attach", "--interactive", name]


def container_name(job_key: str, index: int) -> str:
    """The name of executor ``index``'s container for a job (found again by it)."""
    return f"computenet-{job_key}-{index}".replace(".", "-")


def remove_container(runtime: str, name: str) -> None:
    """Kill and remove a container if it still exists (best effort, bounded)."""
    if runtime not in ("podman", "docker"):
        return
    argv = [runtime, *podman_global_options(), "rm", "-f", "-t", "0", name]
    if runtime == "docker":
        argv = ["docker", "rm", "-f", name]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(argv, capture_output=True, timeout=30, check=False)
