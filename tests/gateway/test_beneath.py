"""File operations beneath a task's directory: no symlink followed, only the task's own
regular files read, globs that match like TES wildcards."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from computenet.gateway.beneath import TaskDir, UnsafePath


def test_reads_and_lists_only_regular_files_never_links(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    work = tmp_path / "work"
    (work / "a" / "b").mkdir(parents=True)
    (work / "a" / "x.log").write_text("x")
    (work / "a" / "b" / "y.log").write_text("y")
    (work / "a" / "link.log").symlink_to(secret)
    (work / "a" / "dirlink").symlink_to(tmp_path)
    os.mkfifo(work / "a" / "fifo.log")
    task = TaskDir(work)
    assert task.files("a") == ["a/b/y.log", "a/x.log"]
    assert task.glob("/a/*.log") == ["a/x.log"]
    assert task.glob("/a/**/*.log") == ["a/b/y.log", "a/x.log"]
    assert task.kind("a") == "dir" and task.kind("a/x.log") == "file"
    assert task.kind("a/link.log") == "other" and task.kind("nope") is None
    with task.open_read("/a/x.log") as f:
        assert f.read() == b"x"
    for bad in ("a/link.log", "a/dirlink/secret.txt", "a/fifo.log", "../secret.txt"):
        with pytest.raises(OSError):
            task.open_read(bad).close()


def test_writes_never_through_a_link_and_only_to_the_tasks_own_files(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    work = tmp_path / "work"
    work.mkdir()
    (work / "log.txt").symlink_to(victim)
    (work / "d").symlink_to(tmp_path)
    task = TaskDir(work)
    with pytest.raises(UnsafePath):
        task.write_from("/log.txt", io.BytesIO(b"pwned"))
    with pytest.raises(UnsafePath):
        task.write_from("/d/victim.txt", io.BytesIO(b"pwned"))
    assert victim.read_text() == "original"
    task.write_from("/new/dir/out.txt", io.BytesIO(b"ok"))
    assert (work / "new" / "dir" / "out.txt").read_bytes() == b"ok"
    if os.geteuid() == 0:  # a file the task does not own (a hard link to root's) is refused
        os.link(victim, work / "hard.txt")
        owned = TaskDir(work, (61997, 61997))
        with pytest.raises(UnsafePath, match="not the task's own"):
            owned.write_from("/hard.txt", io.BytesIO(b"pwned"))
        with pytest.raises(UnsafePath, match="not the task's own"):
            owned.open_read("/hard.txt").close()
        owned.write_from("/made.txt", io.BytesIO(b"ok"))
        assert (work / "made.txt").stat().st_uid == 61997
        assert victim.read_text() == "original"
