"""Resolving a CPI anywhere in the federation, like DNS.

A node answers from its own pools; for a CPI in a child's subtree it asks that child (down),
for anything else its parent (up). Answers from other nodes are cached for a TTL, and a
cached answer is dropped as soon as the index learns that the record changed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import select

from computenet.errors import InvalidInput, NotFound
from computenet.federation.index import PoolIndex, pool_record
from computenet.federation.keys import Identity
from computenet.federation.peer import Peer
from computenet.model.cpi import CPI, node_code_within, validate_node_code
from computenet.store import tables as t
from computenet.store.db import Database
from computenet.store.tables_federation import FedChild


class Resolver:
    """Resolution with a TTL cache invalidated on change."""

    def __init__(
        self, db: Database, ident: Identity, index: PoolIndex, peer: Peer, ttl_s: float
    ) -> None:
        self.db = db
        self.ident = ident
        self.peer = peer
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.index = index
        index.on_change.append(self.invalidate)

    def invalidate(self, cpis: list[str]) -> None:
        """Forget cached answers for ``cpis`` (their records changed)."""
        with self._lock:
            for cpi in cpis:
                self._cache.pop(cpi, None)

    def resolve(self, text: str) -> dict[str, Any]:
        """The resource record of a CPI: ``{cpi, served_by, record, cached}``; a bare node
        code (``cn.31``) resolves to that node: its URL and the pools the index holds."""
        if isinstance(text, str) and "/" not in text.strip() and text.strip():
            try:
                code = validate_node_code(text.strip())
            except InvalidInput:
                raise InvalidInput(
                    f"{text[:80]!r} is neither a node code (e.g. cn.31) nor a CPI with three "
                    "parts, <node-code>/<provider>/<pool>"
                ) from None
            return self._node(code)
        cpi = CPI.parse(text)
        key = str(cpi)
        if cpi.node == self.ident.code:
            with self.db.read() as s:
                row = s.get(t.Pool, key)
            if row is None:
                raise NotFound(f"no resource {key} is registered")
            record = pool_record(row, self.ident.code, self.ident.url)
            return {"cpi": key, "served_by": self.ident.code, "record": record, "cached": False}
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return {**hit[1], "cached": True}
        hop, url = self._next_hop(cpi.node)
        _, answer = self.peer.call(url, "resolve", {"cpi": key}, to=hop)
        out = {"cpi": key, "served_by": answer["served_by"], "record": answer["record"]}
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = (now + self.ttl_s, out)
        return {**out, "cached": False}

    def _node(self, code: str) -> dict[str, Any]:
        """A node as this node's index knows it (itself, its subtree, what it learned above)."""
        for known, url, pools, healthy in self.index.nodes():
            if known == code:
                record = {"kind": "node", "code": code, "url": url, "pools": pools}
                record["healthy_pools"] = healthy
                return {"cpi": code, "served_by": code, "record": record, "cached": False}
        if code == self.ident.code:
            record = {"kind": "node", "code": code, "url": self.ident.url, "pools": 0}
            record["healthy_pools"] = 0
            return {"cpi": code, "served_by": code, "record": record, "cached": False}
        raise NotFound(f"no node {code} is known here (a CPI is <node-code>/<provider>/<pool>)")

    def _next_hop(self, node: str) -> tuple[str, str]:
        """The code and URL of the child whose prefix holds ``node``, else of the parent."""
        if node_code_within(node, self.ident.code):
            with self.db.read() as s:
                for child in s.scalars(select(FedChild)):
                    if node_code_within(node, child.code):
                        return child.code, child.url
            raise NotFound(
                f"no resource {node}/...: no node {node} is enrolled under {self.ident.code}"
            )
        if self.ident.parent_url is None or self.ident.parent_code is None:
            raise InvalidInput(f"CPI node {node!r} lies outside this node's prefix (the root)")
        return self.ident.parent_code, self.ident.parent_url
