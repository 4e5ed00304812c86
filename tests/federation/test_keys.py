"""Certificates and chains: signed from the national root down, each inside its issuer."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from computenet.federation.keys import (
    BadSignature,
    Identity,
    OutsidePrefix,
    public_b64,
    root_identity,
    verify_chain,
)
from fedproc import NOW, child_of


def test_chain_from_root_verifies() -> None:
    root = root_identity("cn", "http://root", NOW)
    sh = child_of(root, "cn.31")
    ai = child_of(sh, "cn.31.ai")
    assert verify_chain(ai.chain, root.root_key).code == "cn.31.ai"
    assert ai.parent_code == "cn.31" and ai.root_key == root.root_key


def test_another_root_is_not_trusted() -> None:
    root, other = root_identity("cn", "u", NOW), root_identity("cn", "u", NOW)
    with pytest.raises(BadSignature, match="national root"):
        verify_chain(child_of(root, "cn.31").chain, other.root_key)


def test_tampered_certificate_fails() -> None:
    root = root_identity("cn", "u", NOW)
    sh = child_of(root, "cn.31")
    sh.chain[-1].body.url = "http://elsewhere"
    with pytest.raises(BadSignature):
        verify_chain(sh.chain, root.root_key)


@pytest.mark.parametrize("code", ["cn.52", "cn.31", "cnx.31.a", "us.1"])
def test_code_outside_the_issuer_prefix_fails(code: str) -> None:
    root = root_identity("cn", "u", NOW)
    sh = child_of(root, "cn.31")
    with pytest.raises(OutsidePrefix):
        verify_chain(child_of(sh, code).chain, root.root_key)


def test_identity_round_trips_with_a_private_key_file(tmp_path: Path) -> None:
    root = root_identity("cn", "http://root", NOW)
    path = tmp_path / "id.json"
    root.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Identity.load(path)
    assert loaded is not None and loaded.chain == root.chain
    assert public_b64(loaded.key) == public_b64(root.key)
    assert Identity.load(tmp_path / "missing.json") is None
