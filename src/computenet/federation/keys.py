"""Node keys and certificates: Ed25519, with the national node as the root of trust.

A certificate binds a node code, level and URL to a public key and is signed by the parent
that allocated the code. A chain runs from the national root's self-signed certificate down to
the node. Each link must lie inside its issuer's prefix, so a child can never speak for codes
its parent did not give it.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, Field

from computenet.errors import Forbidden, InvalidInput, Unauthorized
from computenet.model.cpi import node_code_within, validate_node_code

LEVELS = ("national", "regional", "industry")


class BadSignature(Unauthorized):
    """A signature that does not verify against the claimed key or chain."""

    reason = "bad_signature"


class OutsidePrefix(Forbidden):
    """A node speaking for a code outside the prefix its parent gave it."""

    reason = "outside_prefix"


def b64(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    """Decode :func:`b64`; refuse text that is not base64."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise InvalidInput("a key or signature is not valid base64") from None


def canonical(data: Any) -> bytes:
    """The exact bytes that get signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def public_b64(key: Ed25519PrivateKey) -> str:
    """The raw public key of ``key``, base64."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b64(raw)


def load_public(text: str) -> Ed25519PublicKey:
    """A public key from its base64 raw form."""
    raw = unb64(text)
    if len(raw) != 32:
        raise InvalidInput("an Ed25519 public key has 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(public_key: str, signature: str, data: bytes) -> None:
    """Raise :class:`BadSignature` unless ``signature`` over ``data`` verifies."""
    try:
        load_public(public_key).verify(unb64(signature), data)
    except (InvalidSignature, InvalidInput):
        raise BadSignature("signature does not verify") from None


class CertBody(BaseModel):
    """What a certificate asserts."""

    code: str = Field(max_length=140)
    level: str
    url: str = Field(max_length=512)
    public_key: str = Field(max_length=64)
    issuer: str = Field(max_length=140)  # the issuer's node code; the root issues itself
    issued_at: str


class Cert(BaseModel):
    """A certificate: its body and the issuer's signature over it."""

    body: CertBody
    signature: str = Field(max_length=128)


def sign_cert(issuer_key: Ed25519PrivateKey, body: CertBody) -> Cert:
    """Sign ``body`` with the issuer's key."""
    return Cert(body=body, signature=b64(issuer_key.sign(canonical(body.model_dump()))))


def verify_chain(chain: list[Cert], root_key: str) -> CertBody:
    """Check a chain from the root down; return the last (the sender's) certificate body.

    Each certificate must be signed by the one before it (the first by the trusted root key)
    and its code must lie strictly inside its issuer's code.
    """
    if not chain or len(chain) > 9:
        raise BadSignature("a certificate chain has 1 to 9 certificates")
    root = chain[0].body
    if root.public_key != root_key or root.issuer != root.code:
        raise BadSignature("the chain does not start at this federation's national root")
    issuer_key = root_key
    issuer_code = root.code
    for i, cert in enumerate(chain):
        verify(issuer_key, cert.signature, canonical(cert.body.model_dump()))
        code = cert.body.code
        validate_node_code(code)
        if i > 0 and (code == issuer_code or not node_code_within(code, issuer_code)):
            raise OutsidePrefix(f"node {code!r} is not inside its issuer's prefix {issuer_code!r}")
        if cert.body.issuer != issuer_code:
            raise BadSignature(f"certificate of {code!r} names the wrong issuer")
        issuer_key, issuer_code = cert.body.public_key, code
    return chain[-1].body


@dataclass
class Identity:
    """This node's key, its certificate chain and where its parent is."""

    key: Ed25519PrivateKey
    chain: list[Cert]
    parent_url: str | None

    @property
    def code(self) -> str:
        return self.chain[-1].body.code

    @property
    def level(self) -> str:
        return self.chain[-1].body.level

    @property
    def url(self) -> str:
        return self.chain[-1].body.url

    @property
    def root_key(self) -> str:
        return self.chain[0].body.public_key

    @property
    def parent_code(self) -> str | None:
        return self.chain[-2].body.code if len(self.chain) > 1 else None

    def save(self, path: Path) -> None:
        """Write the identity; the private key file is readable by the owner only."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        data = {
            "key": pem,
            "chain": [c.model_dump() for c in self.chain],
            "parent_url": self.parent_url,
        }
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Identity | None:
        """The saved identity, or None when this node has none yet."""
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        key = serialization.load_pem_private_key(data["key"].encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInput(f"{path}: the node key is not Ed25519")
        chain = [Cert.model_validate(c) for c in data["chain"]]
        return cls(key=key, chain=chain, parent_url=data.get("parent_url"))


def root_identity(
    code: str, url: str, issued_at: str, key: Ed25519PrivateKey | None = None
) -> Identity:
    """A national root: a (fresh) key and a self-signed certificate."""
    validate_node_code(code)
    key = key or Ed25519PrivateKey.generate()
    body = CertBody(
        code=code,
        level="national",
        url=url,
        public_key=public_b64(key),
        issuer=code,
        issued_at=issued_at,
    )
    return Identity(key=key, chain=[sign_cert(key, body)], parent_url=None)
