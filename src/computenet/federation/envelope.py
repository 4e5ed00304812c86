"""Signed, versioned messages between nodes, and the replay guard.

Every request and reply between nodes is an :class:`Envelope`: protocol version, kind, sender
code, recipient code, the sender's certificate chain, a random nonce, a timestamp, the body,
and the sender's Ed25519 signature over all of it. The receiver checks the chain up to the
national root, the signature, that it is the recipient named (so a message meant for one node
cannot be replayed to another within the replay window), the clock skew and that it has not
seen the nonce before.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from pydantic import BaseModel, Field

from computenet.errors import ComputeNetError, InvalidInput, Unauthorized
from computenet.federation.keys import (
    BadSignature,
    Cert,
    CertBody,
    Identity,
    b64,
    canonical,
    verify,
    verify_chain,
)

# 2: envelopes name their recipient. A node speaking 1 is refused with that reason.
FEDERATION_PROTOCOL = 2
MAX_SKEW_S = 60.0
log = logging.getLogger("computenet.federation")


class Replayed(Unauthorized):
    """A message whose nonce was already seen, or too old to tell."""

    reason = "replayed"


class Misdirected(Unauthorized):
    """A message signed for another node."""

    reason = "misdirected"


class Envelope(BaseModel):
    """One signed message."""

    v: int
    kind: str = Field(max_length=32)
    sender: str = Field(max_length=140)
    recipient: str = Field(default="", max_length=140)  # the node code it is meant for
    chain: list[Cert] = Field(max_length=9)
    nonce: str = Field(min_length=16, max_length=64)
    ts: float
    body: dict[str, Any]
    signature: str = Field(max_length=128)

    def signed_part(self) -> bytes:
        return canonical(self.model_dump(exclude={"signature"}))


def seal(ident: Identity, kind: str, body: dict[str, Any], to: str) -> Envelope:
    """Sign ``body`` as a message of ``kind`` from this node to the node ``to``."""
    env = Envelope(
        v=FEDERATION_PROTOCOL,
        kind=kind,
        sender=ident.code,
        recipient=to,
        chain=ident.chain,
        nonce=secrets.token_urlsafe(18),
        ts=time.time(),
        body=body,
        signature="",
    )
    env.signature = b64(ident.key.sign(env.signed_part()))
    return env


class ReplayGuard:
    """Remembers nonces for the skew window.

    Messages stamped before this process started are refused, so a restart needs no stored
    nonces: anything that could be replayed into the new process is too old to be accepted.
    Senders retry with a fresh nonce, so nothing legitimate is lost.
    """

    def __init__(self, skew_s: float = MAX_SKEW_S) -> None:
        self.skew_s = skew_s
        self.started = time.time()
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, sender: str, nonce: str, ts: float) -> None:
        now = time.time()
        if abs(now - ts) > self.skew_s:
            raise Replayed(f"message timestamp is {now - ts:.0f} s off this node's clock")
        if ts < self.started - 1.0:
            raise Replayed("message is older than this node's start; resend it")
        key = f"{sender}:{nonce}"
        with self._lock:
            if key in self._seen:
                raise Replayed(f"nonce {nonce} from {sender} was already used")
            if len(self._seen) > 200_000:
                cutoff = now - self.skew_s
                self._seen = {k: v for k, v in self._seen.items() if v >= cutoff}
            self._seen[key] = ts


def open_envelope(
    env: Envelope, root_key: str, guard: ReplayGuard | None, me: str, kind: str | None = None
) -> CertBody:
    """Check a message to the node ``me``; return the sender's certificate. Refusals are
    logged and raised."""
    try:
        if env.v != FEDERATION_PROTOCOL:
            raise InvalidInput(
                f"federation protocol {env.v} is not spoken here (we speak {FEDERATION_PROTOCOL})"
            )
        if kind is not None and env.kind != kind:
            raise InvalidInput(f"expected a {kind!r} message, got {env.kind!r}")
        sender = verify_chain(env.chain, root_key)
        if sender.code != env.sender:
            raise BadSignature(f"sender {env.sender!r} does not match its certificate")
        verify(sender.public_key, env.signature, env.signed_part())
        # Checked after the signature, so the recipient named is the one the sender signed.
        if env.recipient != me:
            raise Misdirected(f"message is for node {env.recipient or '(none)'!r}, not {me!r}")
        if guard is not None:
            guard.check(env.sender, env.nonce, env.ts)
    except ComputeNetError as exc:
        log.warning("refused %s message from %s: %s", env.kind, env.sender, exc.message)
        raise
    return sender
