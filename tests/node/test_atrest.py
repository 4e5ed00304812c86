"""Files at rest (issue 14): the node's data directory is 0700 and its store, secrets key and
identity 0600, also when they were left looser before; a directory another user owns is
refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from backend_testing import unavailable
from computenet.errors import InvalidInput
from computenet.node.atrest import secure_data_dir
from computenet.node.runtime import NodeRuntime
from computenet.node.settings import NodeSettings
from nodeapi import running_world


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_node_keeps_its_files_to_itself(tmp_path: Path) -> None:
    data = tmp_path / "node"
    with running_world(data, "cn.61") as world:
        world.submit(world.admin)  # writes through SQLite's journal files too
        world.client.put("/api/v1/secrets/tok", json={"value": "s3cr3t"}, headers=world.admin)
        assert _mode(data) == 0o700
        files = [p for p in data.iterdir() if p.is_file()]
        names = {p.name for p in files}
        assert {"computenet.db", "secrets.key"} <= names, names
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_looser_modes_left_from_before_are_tightened_and_reported(tmp_path: Path) -> None:
    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # the umask may have narrowed mkdir's mode
    store, key = data / "computenet.db", data / "secrets.key"
    store.touch(mode=0o644)
    key.write_bytes(b"x")
    os.chmod(store, 0o644)
    os.chmod(key, 0o664)
    elsewhere = tmp_path / "shared.key"
    elsewhere.write_bytes(b"y")
    os.chmod(elsewhere, 0o644)
    fixed = secure_data_dir(data, (elsewhere,))
    assert _mode(data) == 0o700 and _mode(store) == 0o600 and _mode(key) == 0o600
    assert _mode(elsewhere) == 0o600
    assert len(fixed) == 4 and any("0755 -> 0700" in f for f in fixed), fixed
    assert secure_data_dir(data, (elsewhere,)) == []  # nothing left to tighten


def test_a_node_starting_on_old_looser_files_tightens_them(tmp_path: Path) -> None:
    data = tmp_path / "node"
    NodeRuntime(NodeSettings(data_dir=data, node_code="cn.62")).db.engine.dispose()
    for p in [data, *data.iterdir()]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    rt = NodeRuntime(NodeSettings(data_dir=data, node_code="cn.62"))
    rt.db.engine.dispose()
    assert _mode(data) == 0o700
    assert all(_mode(p) == 0o600 for p in data.iterdir() if p.is_file())


def test_a_data_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("giving a directory to another user needs root")
    data = tmp_path / "theirs"
    data.mkdir()
    os.chown(data, 65534, 65534)  # nobody
    with pytest.raises(InvalidInput, match="belongs to uid 65534"):
        NodeRuntime(NodeSettings(data_dir=data, node_code="cn.63"))
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(InvalidInput, match="not a link"):
        secure_data_dir(link)
