"""Which container runtime runs a pool's images, and the command it gets.

No runtime can run an image on this project's machines (no Docker engine, no Apptainer in
Debian 12, no registry for podman), so the runtime path is checked as the argv it builds;
the host path runs for real in the local backend's tests.
"""

from __future__ import annotations

from pathlib import Path

from computenet.gateway.backends.containers import choose_runtime, container_command


def test_first_supported_runtime_the_pool_declares() -> None:
    assert choose_runtime(["docker", "apptainer"]) == "apptainer"
    assert choose_runtime(["podman", "docker"]) == "podman"
    assert choose_runtime(["runc"]) is None
    assert choose_runtime([]) is None


def test_docker_and_podman_bind_the_task_dirs(tmp_path: Path) -> None:
    argv = container_command(
        "podman", "alpine:3", ["cat", "in.txt"], tmp_path, ["data"], "/data", {"A": "1"}
    )
    assert argv == [
        "podman", "run", "--rm", "-i",
        "-v", f"{tmp_path.resolve()}/data:/data",
        "-w", "/data", "-e", "A=1", "alpine:3", "cat", "in.txt",
    ]  # fmt: skip


def test_apptainer_pulls_docker_images_and_keeps_sif_files(tmp_path: Path) -> None:
    argv = container_command("apptainer", "alpine:3", ["true"], tmp_path, ["w"], None, {})
    assert argv == [
        "apptainer", "exec", "--cleanenv", "--containall",
        "--bind", f"{tmp_path.resolve()}/w:/w", "docker://alpine:3", "true",
    ]  # fmt: skip
    sif = container_command("singularity", "/images/tool.sif", ["x"], tmp_path, [], "/w", {})
    assert sif[-2:] == ["/images/tool.sif", "x"] and sif[sif.index("--pwd") + 1] == "/w"
