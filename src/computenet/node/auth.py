"""Auth v0: bearer tokens, stored as SHA-256 hashes, with a small in-memory cache.

Tokens are 256-bit random strings, so a plain SHA-256 is enough to store them safely
(no password stretching needed) and cheap enough to check on every call.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from computenet.errors import Forbidden, Unauthorized
from computenet.model.ids import ulid
from computenet.store.db import Database
from computenet.store.tables import Token

TOKEN_PREFIX = {"admin": "cna_", "user": "cnu_", "gateway": "cng_", "enrol": "cne_"}
_CACHE_TTL_S = 30.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's kind and subject (a user, or a gateway id)."""

    token_id: str
    kind: str
    subject: str

    def require(self, *kinds: str) -> None:
        """Refuse the call unless this principal is one of ``kinds``."""
        if self.kind not in kinds:
            raise Forbidden(f"a {self.kind} token may not do this (needs {' or '.join(kinds)})")


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(db: Database, kind: str, subject: str, ttl_s: float | None = None) -> str:
    """Create, store (hashed) and return a new token. The clear text is never stored."""
    token = TOKEN_PREFIX[kind] + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with db.write() as s:
        s.add(
            Token(
                id=ulid(),
                token_hash=hash_token(token),
                kind=kind,
                subject=subject,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_s) if ttl_s else None,
            )
        )
    return token


class Authenticator:
    """Checks bearer tokens against the store, caching good answers briefly."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def check(self, authorization: str | None) -> Principal:
        """Return the principal for an ``Authorization: Bearer ...`` header, or raise 401."""
        if not authorization:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return self.check_token(token.strip())

    def check_token(self, token: str) -> Principal:
        """Return the principal for a clear-text token, or raise 401."""
        digest = hash_token(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit and hit[0] > now:
            return hit[1]
        with self.db.read() as s:
            row = s.scalars(select(Token).where(Token.token_hash == digest)).first()
        if row is None or row.kind == "enrol":
            raise Unauthorized("invalid token")
        if row.revoked_at is not None:
            raise Unauthorized("token revoked")
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            raise Unauthorized("token expired")
        principal = Principal(row.id, row.kind, row.subject)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + _CACHE_TTL_S, principal)
        return principal

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
