"""Globally unique, time-ordered identifiers for tasks, leases and tokens."""

from __future__ import annotations

import hashlib
import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(now_ms: int | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, 26 Crockford base32 characters.

    Sorting the strings sorts by creation time, which keeps listings cheap.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def task_id(node_code: str) -> str:
    """A task id that names the node it was submitted to: ``cn.31-01J...``."""
    return f"{node_code}-{ulid()}"


def origin_of(task_id: str) -> str:
    """The code of the node a task was submitted to, from its id (see :func:`task_id`)."""
    return task_id.rsplit("-", 1)[0]


def hash_token(token: str) -> str:
    """The stored form of a token (API, gateway or enrolment): its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()
