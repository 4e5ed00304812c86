"""File operations beneath a task's directory that never follow a path the task controls.

The gateway (often root) reads outputs and writes TES stdout/stderr copies in a directory a
task has written to. Every path is walked one component at a time from a descriptor of the
task's directory: each directory opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to its
parent's descriptor, the file itself with ``O_NOFOLLOW``. A symlink anywhere, or a directory
swapped for one between a check and a use, makes the open fail instead of leading out. Files
read must be regular files (not FIFOs or devices) and, when the task has its own uid, owned
by it: a hard link to someone else's file is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafePath(OSError):
    """A task path that is a symlink, leaves the task's directory, or is not the task's."""


def _parts(rel: str) -> list[str]:
    parts = [p for p in PurePosixPath(rel).parts if p not in ("/", ".")]
    if ".." in parts:
        raise UnsafePath(errno.EPERM, f"{rel!r}: '..' is not allowed in a task path")
    return parts


class TaskDir:
    """A task's directory; ``owner`` (uid, gid) is the task's own user when it has one."""

    def __init__(self, root: Path, owner: tuple[int, int] | None = None) -> None:
        self.root = root
        self.owner = owner

    @contextlib.contextmanager
    def _dir_fd(self, parts: list[str], create: bool = False) -> Iterator[int]:
        """A descriptor of the directory ``parts`` below the root, opened without following
        any symlink; ``create`` makes missing directories (owned by the task's user)."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for name in parts:
                try:
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                        if self.owner is not None:
                            os.chown(name, *self.owner, dir_fd=fd, follow_symlinks=False)
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafePath(
                            exc.errno, f"{name!r}: a symlink or not a directory"
                        ) from None
                    raise
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def _check_file(self, fd: int, rel: str) -> os.stat_result:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(errno.EINVAL, f"{rel}: not a regular file")
        if self.owner is not None and st.st_uid != self.owner[0]:
            raise UnsafePath(errno.EPERM, f"{rel}: not the task's own file")
        return st

    def open_read(self, rel: str) -> BinaryIO:
        """Open the task's regular file ``rel`` for reading."""
        parts = _parts(rel)
        if not parts:
            raise UnsafePath(errno.EISDIR, f"{rel}: a directory")
        with self._dir_fd(parts[:-1]) as dfd:
            try:
                fd = os.open(parts[-1], _READ_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafePath(exc.errno, f"{rel}: a symlink") from None
                raise
        try:
            self._check_file(fd, rel)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    def kind(self, rel: str) -> str | None:
        """``file``, ``dir``, ``other`` (a symlink, a FIFO...) or None when absent."""
        parts = _parts(rel)
        if not parts:
            return "dir"
        try:
            with self._dir_fd(parts[:-1]) as dfd:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except UnsafePath:
            return "other"
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        return "file" if stat.S_ISREG(st.st_mode) else "other"

    def files(self, rel: str = "") -> list[str]:
        """Every regular file below directory ``rel``, as a path relative to the root;
        symlinks are neither followed nor listed."""
        parts = _parts(rel)
        found: list[str] = []
        with self._dir_fd(parts) as dfd:
            for dirpath, _dirs, names, subfd in os.fwalk(".", dir_fd=dfd, follow_symlinks=False):
                for name in names:
                    try:
                        st = os.stat(name, dir_fd=subfd, follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        found.append(str(PurePosixPath(*parts, dirpath, name)))
        return sorted(found)

    def glob(self, pattern: str) -> list[str]:
        """Regular files matching a glob (``*``, ``?``, ``[..]`` within a component, ``**``
        any number of components), relative to the root."""
        want = _parts(pattern)
        return [f for f in self.files() if _match(want, PurePosixPath(f).parts)]

    def makedirs(self, rel: str) -> None:
        """Make directory ``rel`` and its parents, owned by the task's user."""
        with self._dir_fd(_parts(rel), create=True):
            pass

    def write_from(self, rel: str, src: BinaryIO) -> None:
        """Write ``src`` to the task's file ``rel`` (made if missing, owned by the task's
        user); an existing file must be the task's own regular file."""
        parts = _parts(rel)
        if not parts:
            raise UnsafePath(errno.EISDIR, f"{rel}: a directory")
        with self._dir_fd(parts[:-1], create=True) as dfd:
            made = True
            try:
                try:
                    fd = os.open(parts[-1], _WRITE_FLAGS | os.O_EXCL, 0o644, dir_fd=dfd)
                except FileExistsError:
                    made = False
                    fd = os.open(parts[-1], _WRITE_FLAGS & ~os.O_CREAT, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafePath(exc.errno, f"{rel}: a symlink") from None
                raise
        try:
            if made and self.owner is not None:
                os.fchown(fd, *self.owner)
            self._check_file(fd, rel)
            os.set_blocking(fd, True)
            os.ftruncate(fd, 0)
            with os.fdopen(fd, "wb", closefd=False) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        finally:
            os.close(fd)


def _match(pattern: list[str] | tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match(rest, parts[1:])
