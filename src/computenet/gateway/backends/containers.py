"""Running an executor's image with the pool's container runtime.

A pool declares the runtimes its machines have (``software.container_runtimes``, found by
the gateway's probe). A task executor with an ``image`` runs in it with the first runtime the
pool declares, in the order of :data:`CONTAINER_RUNTIMES`; with none it runs on the host and
the task's system logs say so. The task's directories (the job's ``work/<root>``) are bound at
the task's paths, so inputs, outputs and ``workdir`` mean the same inside the container.
"""

from __future__ import annotations

from pathlib import Path

from computenet.gateway.backends.sandbox import Sandbox
from computenet.gateway.probe import CONTAINER_RUNTIMES


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
    sandbox: Sandbox | None = None,
) -> list[str]:
    """The argv that runs ``command`` in ``image`` with ``runtime``; ``roots`` are the
    top-level task directories (``data`` for ``/data/x``) bound from ``work``; with a
    ``sandbox``, as its unprivileged user."""
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
        drop = sandbox.drop_command() if sandbox else []
        return [*drop, *argv, source, *command]
    argv = [runtime, "run", "--rm", "-i"]
    if sandbox is not None:
        argv += ["--user", f"{sandbox.uid}:{sandbox.gid}"]
    for b in binds:
        argv += ["-v", b]
    if workdir:
        argv += ["-w", workdir]
    for k, v in sorted(env.items()):
        argv += ["-e", f"{k}={v}"]
    return [*argv, image, *command]
