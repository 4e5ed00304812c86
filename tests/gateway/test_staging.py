"""Data staging through fsspec: file, HTTP (a local server), S3 (a local S3 server), content."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3fs

from computenet.gateway.beneath import TaskDir
from computenet.gateway.staging import CHUNK_BYTES, StagingError, stage_input, stage_outputs
from httpserve import serve_dir
from s3 import require_s3


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3fs.S3FileSystem]:
    env = require_s3()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        fs = s3fs.S3FileSystem(endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True)
        fs.mkdir("staging-test")
        yield fs


def test_content_file_http_and_s3_inputs(tmp_path: Path, s3: s3fs.S3FileSystem) -> None:
    src = tmp_path / "src"
    (src / "d" / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("from a file\n")
    (src / "d" / "one.txt").write_text("1")
    (src / "d" / "sub" / "two.txt").write_text("2")
    (src / "web.txt").write_text("over http\n")
    s3.pipe("staging-test/in.txt", b"from s3\n")
    work = tmp_path / "work"
    with serve_dir(src) as base:
        stage_input({"path": "/c.txt", "content": "inline"}, work / "c.txt")
        stage_input({"url": f"file://{src}/a.txt", "path": "/a.txt"}, work / "a.txt")
        stage_input({"url": str(src / "d"), "path": "/d", "type": "DIRECTORY"}, work / "d")
        stage_input({"url": f"{base}/web.txt", "path": "/web.txt"}, work / "web.txt")
        stage_input({"url": "s3://staging-test/in.txt", "path": "/s3.txt"}, work / "s3.txt")
    assert (work / "c.txt").read_text() == "inline"
    assert (work / "a.txt").read_text() == "from a file\n"
    assert (work / "d" / "sub" / "two.txt").read_text() == "2"
    assert (work / "web.txt").read_text() == "over http\n"
    assert (work / "s3.txt").read_text() == "from s3\n"


@pytest.mark.parametrize(
    "url",
    ["file:///nonexistent/x", "http://127.0.0.1:{port}/missing.txt", "s3://staging-test/none"],
)
def test_missing_input_says_why(tmp_path: Path, s3: s3fs.S3FileSystem, url: str) -> None:
    with serve_dir(tmp_path) as base:
        url = url.replace("http://127.0.0.1:{port}", base)
        with pytest.raises(StagingError, match=r"input .*: (not found|.*404)"):
            stage_input({"url": url, "path": "/x"}, tmp_path / "x")


def test_unsupported_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="scheme 'ftp' is not supported"):
        stage_input({"url": "ftp://example.org/x", "path": "/x"}, tmp_path / "x")


def test_outputs_to_file_and_s3_with_checksums(tmp_path: Path, s3: s3fs.S3FileSystem) -> None:
    work = tmp_path / "work"
    (work / "out" / "deep").mkdir(parents=True)
    (work / "result.txt").write_bytes(b"result\n")
    (work / "out" / "p.log").write_text("p")
    (work / "out" / "deep" / "q.log").write_text("q")
    (work / "out" / "skip.txt").write_text("no")
    dest = tmp_path / "dest"
    inside = TaskDir(work)
    one = stage_outputs({"url": "s3://staging-test/r.txt", "path": "/result.txt"}, inside)
    assert one[0].sha256 == hashlib.sha256(b"result\n").hexdigest()
    assert one[0].size_bytes == 7 and s3.cat("staging-test/r.txt") == b"result\n"
    tree = stage_outputs(
        {"url": f"file://{dest}/tree", "path": "/out", "type": "DIRECTORY"}, inside
    )
    assert {f.path for f in tree} == {"/out/p.log", "/out/deep/q.log", "/out/skip.txt"}
    assert (dest / "tree" / "deep" / "q.log").read_text() == "q"
    logs = stage_outputs(
        {"url": "s3://staging-test/logs", "path": "/out/**/*.log", "path_prefix": "/out"}, inside
    )
    assert sorted(f.url for f in logs) == [
        "s3://staging-test/logs/deep/q.log",
        "s3://staging-test/logs/p.log",
    ]


def test_missing_output_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StagingError, match="did not produce it"):
        stage_outputs({"url": f"file://{tmp_path}/o", "path": "/nope"}, TaskDir(tmp_path))


def test_large_files_are_streamed(tmp_path: Path, s3: s3fs.S3FileSystem) -> None:
    size = 64 * CHUNK_BYTES
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(CHUNK_BYTES))
    tracemalloc.start()
    try:
        stored = stage_outputs(
            {"url": "s3://staging-test/big.bin", "path": "/big.bin"}, TaskDir(tmp_path)
        )
        stage_input({"url": "s3://staging-test/big.bin", "path": "/b"}, tmp_path / "back.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored[0].size_bytes == size
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == stored[0].sha256
    assert peak < size // 2, f"peak {peak} bytes for a {size}-byte file: not streamed"
