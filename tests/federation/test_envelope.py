"""Signed envelopes: signature, sender, protocol version, clock skew and replays."""

from __future__ import annotations

import time

import pytest

from computenet.errors import InvalidInput
from computenet.federation.envelope import (
    Misdirected,
    Replayed,
    ReplayGuard,
    open_envelope,
    seal,
)
from computenet.federation.keys import BadSignature, root_identity
from fedproc import NOW, child_of

ROOT = root_identity("cn", "http://root", NOW)
SH = child_of(ROOT, "cn.31")


def test_sealed_message_opens_once() -> None:
    guard = ReplayGuard()
    env = seal(SH, "index.pull", {"after": 3}, "cn")
    assert open_envelope(env, ROOT.root_key, guard, "cn", "index.pull").code == "cn.31"
    with pytest.raises(Replayed, match="already used"):
        open_envelope(env, ROOT.root_key, guard, "cn")


def test_tampered_body_fails() -> None:
    env = seal(SH, "index.pull", {"after": 3}, "cn")
    env.body["after"] = 0
    with pytest.raises(BadSignature):
        open_envelope(env, ROOT.root_key, ReplayGuard(), "cn")


def test_sender_must_match_its_certificate() -> None:
    env = seal(SH, "index.pull", {}, "cn")
    env.sender = "cn"
    with pytest.raises(BadSignature):
        open_envelope(env, ROOT.root_key, ReplayGuard(), "cn")


def test_wrong_kind_and_version_fail() -> None:
    with pytest.raises(InvalidInput, match="expected"):
        open_envelope(seal(SH, "resolve", {}, "cn"), ROOT.root_key, None, "cn", "index.pull")
    env = seal(SH, "resolve", {}, "cn")
    env.v = 1  # before envelopes named their recipient
    with pytest.raises(InvalidInput, match="protocol 1"):
        open_envelope(env, ROOT.root_key, None, "cn")


def test_a_message_for_another_node_is_refused_and_the_recipient_is_signed() -> None:
    guard = ReplayGuard()
    env = seal(SH, "index.pull", {}, "cn.44")
    with pytest.raises(Misdirected, match=r"for node 'cn\.44', not 'cn'"):
        open_envelope(env, ROOT.root_key, guard, "cn")
    env.recipient = "cn"
    with pytest.raises(BadSignature):
        open_envelope(env, ROOT.root_key, guard, "cn")


def test_stale_or_pre_start_messages_fail() -> None:
    guard = ReplayGuard(skew_s=5)
    env = seal(SH, "resolve", {}, "cn")
    env.ts = time.time() - 30
    with pytest.raises(Replayed, match="off this node's clock"):
        guard.check(env.sender, env.nonce, env.ts)
    guard.started = time.time() + 3  # as if this process started after the message was sent
    with pytest.raises(Replayed, match="older than this node's start"):
        guard.check(env.sender, "n" * 16, time.time())
