"""The node's files at rest: its data directory 0700, everything in it 0600.

The data directory holds the SQLite store (tokens' hashes, tenants' encrypted secrets, every
task), the secrets key, the federation identity (the node's private key) and, under ``up``,
the local gateway's credential. Tasks may run on the same host as other users, so none of it
may be readable by anyone but the node's own user. A directory or file that already exists
with a looser mode (made by an older version, or by hand) is tightened, and the operator is
told which; one owned by another user is refused, since its owner could read or swap it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from computenet.errors import InvalidInput

log = logging.getLogger("computenet")
DIR_MODE = 0o700
FILE_MODE = 0o600
STORE_FILE = "computenet.db"


def _owned(path: Path, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        raise InvalidInput(
            f"{path} belongs to uid {st.st_uid}, not to this node's uid {os.geteuid()}: "
            "another user could read or replace the node's data; give the node its own "
            "--data-dir"
        )


def _tighten(path: Path, st: os.stat_result, mode: int) -> str | None:
    loose = stat.S_IMODE(st.st_mode) & ~mode
    if not loose:
        return None
    os.chmod(path, stat.S_IMODE(st.st_mode) & mode, follow_symlinks=False)
    return f"{path}: mode {stat.S_IMODE(st.st_mode):04o} -> {stat.S_IMODE(st.st_mode) & mode:04o}"


def secure_data_dir(
    data_dir: Path, extra_files: tuple[Path, ...] = (), sqlite: bool = True
) -> list[str]:
    """Make ``data_dir`` (0700) and, for a SQLite store, its file (0600, before SQLite opens
    it, so the journal files SQLite makes beside it get the same mode); tighten what already
    exists in it, and ``extra_files`` (a secrets key kept elsewhere). Returns what was
    tightened (also logged); raises ``InvalidInput`` for a path another user owns or a
    symlinked directory."""
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = data_dir.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{data_dir} must be a directory, not a link or a file")
    _owned(data_dir, st)
    fixed = [_tighten(data_dir, st, DIR_MODE)]
    store = data_dir / STORE_FILE
    if sqlite and not store.exists():
        os.close(os.open(store, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE))
    for path in [*data_dir.iterdir(), *(p for p in extra_files if p.exists())]:
        st = path.lstat()
        # Directories inside (the gateway's state under ``up``) keep their modes: the data
        # directory's 0700 already closes them to every other user.
        if stat.S_ISREG(st.st_mode):
            _owned(path, st)
            fixed.append(_tighten(path, st, FILE_MODE))
    done = [f for f in fixed if f is not None]
    for line in done:
        log.warning("tightened a node file that others could read: %s", line)
    return done
