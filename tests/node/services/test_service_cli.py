"""``computenet service``: a bad service file or a missing flag is one clear line and a
non-zero exit, before anything is sent (the rest runs in tests/e2e/test_service_replica.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeproc import cli

ENV = {"COMPUTENET_URL": "http://127.0.0.1:9", "COMPUTENET_TOKEN": "cna_unused"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: Bad_Name\nexecutor: {command: [x]}\n", "name: String should match pattern"),
        ("name: ok\nexecutor: {command: [x]}\nreplicas: {min: 3, max: 2}\n", "must not exceed"),
        ("name: ok\nexecutor: {command: [x], env: {PORT: '1'}}\n", "must not set PORT"),
        ("- just\n- a list\n", "must hold one service (a mapping)"),
    ],
)
def test_bad_service_files_are_one_line(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "service.yaml"
    path.write_text(text)
    r = cli("service", "deploy", "-f", str(path), env=ENV)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], r.stderr


def test_scale_needs_a_bound_and_an_unreachable_node_is_one_line() -> None:
    r = cli("service", "scale", "lm", env=ENV)
    assert r.returncode == 2 and "give --min, --max or both" in r.stderr
    r = cli("service", "list", env=ENV)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr


HEAD = "name: ok\nexecutor: {command: [python3, server.py]}\n"


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ("[{local: missing.py}]", "inputs.0.local missing.py: cannot read it"),
        ("[{local: ../outside.py}]", "../outside.py leaves the service file's directory"),
        ("[{local: link.py}]", "link.py leaves the service file's directory"),
        ("[{local: /etc/hostname}]", "must be relative to the service file"),
        ("[{local: big.txt}]", "over the 131072 bytes an input may carry inline"),
        ("[{local: blob.bin}]", "blob.bin is not text"),
        ("[{local: server.py, content: x}]", "give local or content, not both"),
        ("[{local: 3}]", "a file name relative to the service file"),
    ],
)
def test_bad_local_inputs_are_one_line(tmp_path: Path, inputs: str, words: str) -> None:
    svc = tmp_path / "svc"
    svc.mkdir()
    (tmp_path / "outside.py").write_text("secret = 1\n")
    (svc / "server.py").write_text("print('hi')\n")
    (svc / "link.py").symlink_to(tmp_path / "outside.py")  # a link out is an escape too
    (svc / "big.txt").write_text("x" * (128 * 1024 + 1))
    (svc / "blob.bin").write_bytes(b"\xff\xfe\x00")
    path = svc / "service.yaml"
    path.write_text(f"{HEAD}inputs: {inputs}\n")
    r = cli("service", "deploy", "-f", str(path), env=ENV)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and str(path) in lines[0], r.stderr


def test_local_inputs_are_read_relative_to_the_service_file(tmp_path: Path) -> None:
    # Valid local inputs get as far as the (unreachable) node: read, checked, then sent.
    (tmp_path / "server.py").write_text("print('hi')\n")
    path = tmp_path / "service.yaml"
    path.write_text(f"{HEAD}inputs: [{{local: server.py}}]\n")
    r = cli("service", "deploy", "-f", str(path), "--input", str(path), env=ENV)
    assert r.returncode == 1 and "cannot reach node" in r.stderr, r.stderr
