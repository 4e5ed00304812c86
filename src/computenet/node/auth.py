"""Auth v0: bearer tokens, stored as SHA-256 hashes, with a small in-memory cache.

Tokens are 256-bit random strings, so a plain SHA-256 is enough to store them safely
(no password stretching needed) and cheap enough to check on every call.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from computenet.errors import Forbidden, NotFound, Unauthorized
from computenet.model.ids import hash_token, ulid
from computenet.node.access import ROLE_SCOPES, TENANT_PATTERN, account_key, owner_key
from computenet.store.db import Database
from computenet.store.tables import Token

TOKEN_PREFIX = {
    "admin": "cna_",
    "operator": "cno_",
    "user": "cnu_",
    "provider": "cnp_",
    "gateway": "cng_",
    "enrol": "cne_",
}
# A revoked token stops working at once on the replica that revoked it, and within this
# long on the others (they serve it from their cache until then).
CACHE_TTL_S = 5.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's kind (its role), subject (a user, a provider prefix, a
    gateway id), tenant (organisation) and scopes."""

    token_id: str
    kind: str
    subject: str
    tenant: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def owner(self) -> str:
        """The key of what this principal owns (``acme/bob``, ``user:alice``)."""
        return owner_key(self.kind, self.subject, self.tenant)

    @property
    def account(self) -> str:
        """The key of what its tenant holds together: secrets, budget, invoices."""
        return account_key(self.kind, self.subject, self.tenant)

    def require(self, *kinds: str) -> None:
        """Refuse the call unless this principal is one of ``kinds``."""
        if self.kind not in kinds:
            raise Forbidden(f"a {self.kind} token may not do this (needs {' or '.join(kinds)})")


def new_token(
    db: Database, kind: str, subject: str, ttl_s: float | None = None, **fields: Any
) -> str:
    """Create, store (hashed) and return a new token; ``fields`` as for ``mint_token``."""
    return mint_token(db, kind, subject, ttl_s, **fields)[0]


def mint_token(
    db: Database,
    kind: str,
    subject: str,
    ttl_s: float | None = None,
    *,
    tenant: str | None = None,
    scopes: frozenset[str] | None = None,
    name: str | None = None,
) -> tuple[str, Token]:
    """Create and store (hashed) a token; return its clear text, never stored, and record.

    ``scopes`` defaults to everything the role (``kind``) may hold.
    """
    token = TOKEN_PREFIX[kind] + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    row = Token(
        id=ulid(),
        token_hash=hash_token(token),
        kind=kind,
        subject=subject,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s) if ttl_s else None,
        tenant=tenant,
        scopes=sorted(ROLE_SCOPES[kind] if scopes is None else scopes),
        name=name,
    )
    with db.write() as s:
        s.add(row)
    return token, row


def _basic_password(credentials: str) -> str:
    """The password of HTTP Basic credentials (base64 of ``user:password``); '' if malformed."""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


class Authenticator:
    """Checks bearer tokens against the store, caching good answers briefly."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, Principal, datetime | None]] = {}
        self._lock = threading.Lock()

    def check(self, authorization: str | None) -> Principal:
        """Return the principal for an ``Authorization: Bearer <token>`` header, or HTTP
        Basic with the token as the password (what workflow engines configured with a user
        and a password send: Snakemake, Nextflow); raise 401 otherwise."""
        if not authorization:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "basic":
            token = _basic_password(token)
        elif scheme.lower() != "bearer":
            token = ""
        if not token.strip():
            raise Unauthorized(
                "the Authorization header must be 'Bearer <token>', or Basic with the token "
                "as the password"
            )
        return self.check_token(token.strip())

    def check_token(self, token: str) -> Principal:
        """Return the principal for a clear-text token, or raise 401."""
        digest = hash_token(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit and hit[0] > now and (hit[2] is None or hit[2] > datetime.now(UTC)):
            return hit[1]
        with self.db.read() as s:
            row = s.scalars(select(Token).where(Token.token_hash == digest)).first()
        if row is None or row.kind == "enrol":
            raise Unauthorized("invalid token")
        if row.revoked_at is not None:
            raise Unauthorized("token revoked")
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            raise Unauthorized("token expired")
        if row.tenant is not None and not re.fullmatch(TENANT_PATTERN, row.tenant):
            # Minted before tenant names were restricted: its keys could name another
            # principal, so it stands for no one.
            raise Unauthorized("this token's tenant name is no longer valid; mint a new token")
        # Tokens from before scopes existed hold their role's scopes.
        scopes = frozenset(row.scopes) if row.scopes is not None else ROLE_SCOPES[row.kind]
        principal = Principal(row.id, row.kind, row.subject, row.tenant, scopes)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + CACHE_TTL_S, principal, row.expires_at)
        return principal

    def revoke(self, token_id: str) -> Token:
        """Revoke a token (idempotent) and drop it from this replica's cache."""
        with self.db.write() as s:
            row = s.get(Token, token_id, with_for_update=True)
            if row is None or row.kind == "enrol":
                raise NotFound(f"no token {token_id!r}")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
        with self._lock:
            for digest, (_until, p, _expires) in list(self._cache.items()):
                if p.token_id == token_id:
                    del self._cache[digest]
        return row

    def token(self, token_id: str) -> Token | None:
        """One token's record, or None."""
        with self.db.read() as s:
            return s.get(Token, token_id)

    def tokens(self) -> list[Token]:
        """Every API and gateway token (never their secrets: only hashes are stored)."""
        with self.db.read() as s:
            q = select(Token).where(Token.kind != "enrol").order_by(Token.created_at)
            return list(s.scalars(q))

    def redeem_enrolment(self, token: str) -> str:
        """Consume a one-time enrolment token; return the provider prefix it was issued for."""
        digest = hash_token(token)
        with self.db.write() as s:
            row = s.scalars(select(Token).where(Token.token_hash == digest)).first()
            if row is None or row.kind != "enrol":
                raise Unauthorized("invalid enrolment token")
            if row.revoked_at is not None:
                raise Unauthorized("enrolment token already used or revoked")
            if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
                raise Unauthorized("enrolment token expired")
            row.revoked_at = datetime.now(UTC)
            return row.subject
