"""Which container runtime runs a pool's images, and the command it gets.

Podman really runs a locally built image in tests/security/test_task_attacks.py (isolated,
as the task's uid); here, the argv each runtime gets, including Docker and Apptainer, which
this project's machines do not have.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from computenet.gateway.backends.cgroups import Limits, is_v2
from computenet.gateway.backends.containers import choose_runtime, container_command
from computenet.gateway.backends.sandbox import TaskSandbox


def test_first_supported_runtime_the_pool_declares() -> None:
    assert choose_runtime(["docker", "apptainer"]) == "apptainer"
    assert choose_runtime(["podman", "docker"]) == "podman"
    assert choose_runtime(["runc"]) is None
    assert choose_runtime([]) is None


def test_docker_and_podman_bind_the_task_dirs(tmp_path: Path) -> None:
    argv = container_command(
        "docker", "alpine:3", ["cat", "in.txt"], tmp_path, ["data"], "/data", {"A": "1"}
    )
    assert argv == [
        "docker", "run", "--rm", "-i",
        "-v", f"{tmp_path.resolve()}/data:/data",
        "-w", "/data", "-e", "A=1", "alpine:3", "cat", "in.txt",
    ]  # fmt: skip
    podman = container_command("podman", "alpine:3", ["true"], tmp_path, [], None, {})
    assert podman[0] == "podman" and podman[-5:] == ["run", "--rm", "-i", "alpine:3", "true"]
    if not is_v2() and shutil.which("runc"):  # crun refuses hybrid cgroups
        assert podman[1:3] == ["--runtime", "runc"]


def test_a_sandboxed_image_runs_isolated_under_the_tasks_limits(tmp_path: Path) -> None:
    box = TaskSandbox(61005, 61005, tmp_path, max_pids=64)
    argv = container_command(
        "docker", "alpine:3", ["true"], tmp_path, [], None, {}, box,
        Limits(max_pids=64, memory_bytes=1 << 30, cpu_cores=2.0), "computenet-x-0",
    )  # fmt: skip
    text = " ".join(argv)
    for part in (
        "--name computenet-x-0", "--user 61005:61005", "--network none", "--cap-drop all",
        "--security-opt no-new-privileges", "--read-only", "--pids-limit 64",
        "--ulimit nproc=64:64", f"--memory {1 << 30}", "--cpus 2.0",
    ):  # fmt: skip
        assert part in text, part


def test_apptainer_pulls_docker_images_and_keeps_sif_files(tmp_path: Path) -> None:
    argv = container_command("apptainer", "alpine:3", ["true"], tmp_path, ["w"], None, {})
    assert argv == [
        "apptainer", "exec", "--cleanenv", "--containall",
        "--bind", f"{tmp_path.resolve()}/w:/w", "docker://alpine:3", "true",
    ]  # fmt: skip
    sif = container_command("singularity", "/images/tool.sif", ["x"], tmp_path, [], "/w", {})
    assert sif[-2:] == ["/images/tool.sif", "x"] and sif[sif.index("--pwd") + 1] == "/w"
