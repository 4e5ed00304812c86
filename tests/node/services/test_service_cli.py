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
