"""Task secrets: stored encrypted, named by tasks, injected only when a task runs, masked in
its logs.

Values are encrypted with Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under
the node's secrets key: ``--secrets-key-file`` when given (replicas of one node on PostgreSQL
must share one), else ``<data dir>/secrets.key``, made on first start with mode 0600. The API
stores, lists (names only) and deletes them; nothing ever returns a value. A leased task's
gateway receives the values it names, and the node masks those values in every log chunk the
gateway reports, so they never reach the task's logs or any API answer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from computenet.errors import InvalidInput, NotFound, Unavailable
from computenet.store.db import Database
from computenet.store.tables_secrets import Secret

MAX_VALUE_BYTES = 64 * 1024


def load_key(path: Path) -> bytes:
    """The secrets key at ``path``, made (mode 0600) when missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    key = path.read_bytes().strip()
    try:
        Fernet(key)
    except ValueError:
        raise InvalidInput(
            f"{path} does not hold a secrets key (32 url-safe base64 bytes)"
        ) from None
    return key


def mask(text: str, values: Iterable[str]) -> str:
    """``text`` with every occurrence of each value replaced by as many ``*``: the length
    stays, so log offsets stay true."""
    for value in sorted(values, key=len, reverse=True):
        if value:
            text = text.replace(value, "*" * len(value))
    return text


class SecretStore:
    """The secrets of this node's tenants."""

    def __init__(self, db: Database, key: bytes) -> None:
        self.db = db
        self._fernet = Fernet(key)

    def put(self, scope: str, name: str, value: str) -> datetime:
        """Store (or replace) a secret; returns when."""
        if not value or len(value.encode()) > MAX_VALUE_BYTES:
            raise InvalidInput(f"a secret's value must be 1 byte to {MAX_VALUE_BYTES} bytes")
        now = datetime.now(UTC)
        token = self._fernet.encrypt(value.encode()).decode()
        with self.db.write() as s:
            row = s.get(Secret, (scope, name), with_for_update=True)
            if row is None:
                s.add(Secret(scope=scope, name=name, ciphertext=token, updated_at=now))
            else:
                row.ciphertext, row.updated_at = token, now
        return now

    def names(self, scope: str) -> list[Secret]:
        """The scope's secrets (their records; values stay encrypted)."""
        with self.db.read() as s:
            return list(
                s.scalars(select(Secret).where(Secret.scope == scope).order_by(Secret.name))
            )

    def delete(self, scope: str, name: str) -> None:
        """Forget a secret."""
        with self.db.write() as s:
            row = s.get(Secret, (scope, name), with_for_update=True)
            if row is None:
                raise NotFound(f"no secret {name!r}")
            s.delete(row)

    def require(self, scope: str, names: Iterable[str]) -> None:
        """Refuse a task that names a secret its submitter does not have."""
        wanted = set(names)
        if not wanted:
            return
        have = {r.name for r in self.names(scope)}
        if missing := sorted(wanted - have):
            raise InvalidInput(f"no secret named {', '.join(map(repr, missing))} for {scope!r}")

    def values(self, s: Session, scope: str, names: Iterable[str]) -> dict[str, str]:
        """Secret name -> clear value, for the names that exist (inside ``s``)."""
        wanted = set(names)
        if not wanted:
            return {}
        rows = s.scalars(select(Secret).where(Secret.scope == scope, Secret.name.in_(wanted)))
        out = {}
        for row in rows:
            try:
                out[row.name] = self._fernet.decrypt(row.ciphertext.encode()).decode()
            except InvalidToken:
                raise Unavailable(
                    f"secret {row.name!r} cannot be decrypted: this node's secrets key changed"
                ) from None
        return out
