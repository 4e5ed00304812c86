"""Signed envelopes: signature, sender, protocol version, clock skew and replays."""

from __future__ import annotations

import time

import pytest

from computenet.errors import InvalidInput
from computenet.federation.envelope import Replayed, ReplayGuard, open_envelope, seal
from computenet.federation.keys import BadSignature, root_identity
from fedproc import NOW, child_of

ROOT = root_identity("cn", "http://root", NOW)
SH = child_of(ROOT, "cn.31")


def test_sealed_message_opens_once() -> None:
    guard = ReplayGuard()
    env = seal(SH, "index.pull", {"after": 3})
    assert open_envelope(env, ROOT.root_key, guard, "index.pull").code == "cn.31"
    with pytest.raises(Replayed, match="already used"):
        open_envelope(env, ROOT.root_key, guard)


def test_tampered_body_fails() -> None:
    env = seal(SH, "index.pull", {"after": 3})
    env.body["after"] = 0
    with pytest.raises(BadSignature):
        open_envelope(env, ROOT.root_key, ReplayGuard())


def test_sender_must_match_its_certificate() -> None:
    env = seal(SH, "index.pull", {})
    env.sender = "cn"
    with pytest.raises(BadSignature):
        open_envelope(env, ROOT.root_key, ReplayGuard())


def test_wrong_kind_and_version_fail() -> None:
    with pytest.raises(InvalidInput, match="expected"):
        open_envelope(seal(SH, "resolve", {}), ROOT.root_key, None, "index.pull")
    env = seal(SH, "resolve", {})
    env.v = 2
    with pytest.raises(InvalidInput, match="protocol 2"):
        open_envelope(env, ROOT.root_key, None)


def test_stale_or_pre_start_messages_fail() -> None:
    guard = ReplayGuard(skew_s=5)
    env = seal(SH, "resolve", {})
    env.ts = time.time() - 30
    with pytest.raises(Replayed, match="off this node's clock"):
        guard.check(env.sender, env.nonce, env.ts)
    guard.started = time.time() + 3  # as if this process started after the message was sent
    with pytest.raises(Replayed, match="older than this node's start"):
        guard.check(env.sender, "n" * 16, time.time())
