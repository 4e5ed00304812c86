"""Node-to-node forwarding of service requests: a signed header, checked by the next node.

A node that passes a request to another node signs a ``service.forward`` envelope (the
federation's own: certificate chain, recipient, nonce, timestamp) naming the request (method,
path, a hash of the body), the nodes it went through and the client's region, and sends it in
the ``X-ComputeNet-Forward`` header. The receiver checks it like any federation message, so it
may skip the service key check its peer already made; the route list and hop limit keep
forwarding loop-free.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from pydantic import ValidationError

from computenet.errors import Unauthorized
from computenet.federation.envelope import Envelope, ReplayGuard, open_envelope, seal
from computenet.federation.keys import Identity

FORWARD_HEADER = "x-computenet-forward"
KIND = "service.forward"


@dataclass(frozen=True)
class Forwarded:
    """What a forwarding node vouched for."""

    sender: str
    route: list[str]  # node codes the request went through, the sender last
    region: str | None  # the client's region as the first node saw it
    key_checked: bool  # whether a node on the way checked the service key


def _digest(method: str, path: str, body: bytes) -> str:
    h = hashlib.sha256(f"{method} {path}\n".encode())
    h.update(body)
    return h.hexdigest()


def seal_forward(
    ident: Identity,
    to: str,
    method: str,
    path: str,
    body: bytes,
    route: list[str],
    region: str | None,
    key_checked: bool,
) -> str:
    """The header value that vouches for a request this node sends on to node ``to``."""
    env = seal(
        ident,
        KIND,
        {
            "request": _digest(method, path, body),
            "route": [*route, ident.code],
            "region": region,
            "key_checked": key_checked,
        },
        to,
    )
    return base64.urlsafe_b64encode(env.model_dump_json().encode()).decode()


def open_forward(
    header: str, ident: Identity, guard: ReplayGuard, method: str, path: str, body: bytes
) -> Forwarded:
    """Check a forward header for this request; raise Unauthorized when it does not hold."""
    try:
        env = Envelope.model_validate_json(base64.urlsafe_b64decode(header.encode()))
    except (ValidationError, binascii.Error, ValueError):
        raise Unauthorized("malformed X-ComputeNet-Forward header") from None
    sender = open_envelope(env, ident.root_key, guard, ident.code, kind=KIND)
    b = env.body
    if b.get("request") != _digest(method, path, body):
        raise Unauthorized("the forward header was signed for another request")
    route = [str(c) for c in b.get("route", [])]
    if not route or route[-1] != sender.code:
        raise Unauthorized("the forward route does not end at its sender")
    region = b.get("region")
    return Forwarded(
        sender=sender.code,
        route=route,
        region=str(region) if region else None,
        key_checked=bool(b.get("key_checked")),
    )
