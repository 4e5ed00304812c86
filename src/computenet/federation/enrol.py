"""Enrolment: a parent issues a one-time token; the child proves its new key and gets a code.

The parent's operator issues a token for one child label and level. The child generates an
Ed25519 key pair, signs its enrolment request with it (proof of possession) and sends the
token. The parent allocates ``<parent-code>.<label>``, signs the child's certificate and
returns the whole chain, which the child keeps as its identity.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select

from computenet.errors import Conflict, InvalidInput, Unauthorized, Unavailable
from computenet.federation.keys import (
    LEVELS,
    Cert,
    CertBody,
    Identity,
    b64,
    canonical,
    public_b64,
    root_identity,
    sign_cert,
    verify,
    verify_chain,
)
from computenet.federation.ports import FederationSettings
from computenet.model.cpi import allocate_child_code
from computenet.model.ids import hash_token, ulid
from computenet.store.db import Database
from computenet.store.tables import Token
from computenet.store.tables_federation import FedChild

TOKEN_KIND = "node-enrol"
IDENTITY_FILE = "federation-identity.json"
log = logging.getLogger("computenet.federation")


class EnrolIn(BaseModel):
    """A child's enrolment request, signed with the key it asks to have certified."""

    token: str = Field(min_length=8, max_length=128)
    public_key: str = Field(max_length=64)
    url: str = Field(min_length=8, max_length=512)
    proof: str = Field(max_length=128)

    def signed_part(self) -> bytes:
        return canonical({"token": self.token, "public_key": self.public_key, "url": self.url})


class EnrolOut(BaseModel):
    """The child's certificate chain, from the national root down to the child."""

    chain: list[Cert]


def issue_token(db: Database, parent_code: str, label: str, level: str, ttl_s: float) -> str:
    """Issue a one-time token for child ``label`` at ``level``; return it (shown once)."""
    if level not in ("regional", "industry"):
        raise InvalidInput(f"a child node is regional or industry, not {level!r}")
    code = allocate_child_code(parent_code, label)
    token = "cnn_" + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with db.write() as s:
        if s.get(FedChild, code) is not None:
            raise Conflict(f"node {code} is already enrolled here")
        s.add(
            Token(
                id=ulid(),
                token_hash=hash_token(token),
                kind=TOKEN_KIND,
                subject=f"{code} {level}",
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_s),
            )
        )
    return token


def accept_enrolment(db: Database, ident: Identity, req: EnrolIn) -> EnrolOut:
    """Redeem the token, allocate the child's code and sign its certificate."""
    try:
        verify(req.public_key, req.proof, req.signed_part())
    except Unauthorized:
        log.warning("refused enrolment from %s: proof of key possession does not verify", req.url)
        raise
    now = datetime.now(UTC)
    with db.write() as s:
        row = s.scalars(select(Token).where(Token.token_hash == hash_token(req.token))).first()
        why = None
        if row is None or row.kind != TOKEN_KIND:
            why = "invalid enrolment token"
        elif row.revoked_at is not None:
            why = "enrolment token already used or revoked"
        elif row.expires_at is not None and row.expires_at <= now:
            why = "enrolment token expired"
        if why is not None or row is None:
            log.warning("refused enrolment from %s: %s", req.url, why)
            raise Unauthorized(why or "invalid enrolment token")
        code, level = row.subject.split(" ")
        row.revoked_at = now
        body = CertBody(
            code=code,
            level=level,
            url=req.url.rstrip("/"),
            public_key=req.public_key,
            issuer=ident.code,
            issued_at=now.isoformat(),
        )
        s.add(
            FedChild(
                code=code,
                level=level,
                url=body.url,
                public_key=req.public_key,
                enrolled_at=now,
                last_seen_at=now,
                last_seq=0,
                silent=False,
            )
        )
    log.info("enrolled %s node %s at %s", level, code, body.url)
    return EnrolOut(chain=[*ident.chain, sign_cert(ident.key, body)])


def enrol_with_parent(parent_url: str, token: str, url: str) -> Identity:
    """Child side: make a key pair, enrol at the parent and return the new identity."""
    key = Ed25519PrivateKey.generate()
    try:
        req = EnrolIn(token=token, public_key=public_b64(key), url=url, proof="")
    except ValidationError:
        raise InvalidInput("the enrolment token or this node's URL is malformed") from None
    req.proof = b64(key.sign(req.signed_part()))
    try:
        resp = httpx.post(
            f"{parent_url.rstrip('/')}/federation/v1/enrol", json=req.model_dump(), timeout=10
        )
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot reach parent node at {parent_url}: {exc}") from None
    if resp.status_code >= 400:
        try:
            message = resp.json().get("message", resp.text)
        except ValueError:
            message = resp.text[:200]
        raise Unauthorized(f"parent node refused enrolment: {message}")
    out = EnrolOut.model_validate(resp.json())
    verify_chain(out.chain, out.chain[0].body.public_key)
    if out.chain[-1].body.public_key != req.public_key:
        raise Unauthorized("parent returned a certificate for another key")
    return Identity(key=key, chain=out.chain, parent_url=parent_url.rstrip("/"))


def prepare_identity(settings: FederationSettings) -> Identity:
    """Load this node's identity, enrolling at the parent or creating a root on first start.

    Sets ``settings.node_code`` (and level) from the certificate: a child's code is the one its
    parent allocated, whatever the command line said.
    """
    path: Path = settings.data_dir / IDENTITY_FILE
    url = settings.public_url.rstrip("/")
    ident = Identity.load(path)
    if ident is None:
        if settings.parent_url and settings.level == "national":
            raise InvalidInput("a national node has no parent: give --level regional or industry")
        if settings.parent_url:
            if not settings.enrol_token:
                raise InvalidInput("a child node's first start needs --enrol-token from its parent")
            ident = enrol_with_parent(settings.parent_url, settings.enrol_token, url)
        else:
            if settings.level != "national":
                raise InvalidInput(f"a {settings.level} node needs --parent (its parent's URL)")
            ident = root_identity(settings.node_code, url, datetime.now(UTC).isoformat())
        ident.save(path)
    elif ident.parent_code is None and ident.code != settings.node_code:
        raise Conflict(
            f"this data directory belongs to node {ident.code!r}, not {settings.node_code!r}"
        )
    elif ident.parent_code is None and ident.url != url and url:
        # The root may move: re-sign its own certificate; the key, and so the trust, stay.
        ident = root_identity(ident.code, url, datetime.now(UTC).isoformat(), ident.key)
        ident.save(path)
    if ident.level not in LEVELS:
        raise InvalidInput(f"identity level {ident.level!r} is unknown")
    settings.node_code = ident.code
    settings.level = ident.level
    return ident
