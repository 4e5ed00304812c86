"""Live sync of the pool index: deltas up to the parent, pages of the global index down.

Up: each tick a child sends the records of its subtree that changed since the last delta the
parent acknowledged, numbered; the parent applies delta ``n`` only after ``n - 1`` (a repeat
of ``n - 1`` is harmless) and otherwise asks for everything again. An empty delta is the
child's heartbeat. Down: a child pages through the parent's index after the last change it
holds, skipping its own subtree. A child silent past the timeout has its pools marked
unavailable; when it speaks again it is asked for a full resend.

Every ``RTT_EVERY_S`` a child times a round trip to its parent and sends the figure with its
next delta, so both ends keep the (child region, parent region) sample in the latency matrix
(:mod:`computenet.node.netmeasure`), as gateways do for theirs. Both ends report, per peer,
how long ago the last sync exchange succeeded (``on_lag``: the sync-lag gauge).

Each delta also carries the health of the service replicas the child routes to
(``service_health``, the metric plane's report), which the parent hands to its own plane
(``on_service_health``): so a parent skips a child whose replicas are all unhealthy, a sync
period after the child knows it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from computenet.errors import ComputeNetError, Forbidden
from computenet.federation.index import PoolIndex
from computenet.federation.keys import CertBody, Identity
from computenet.federation.peer import Peer
from computenet.model.pool import REGION_CODE
from computenet.store.db import Database
from computenet.store.tables_federation import FedChild
from computenet.tasks.clock import utcnow

log = logging.getLogger("computenet.federation")
RTT_EVERY_S = 10.0


def link_id(code: str) -> str:
    """The measurer id of a node-to-node RTT sample (gateways use their own ids)."""
    return f"node:{code}"


class Sync:
    """Both ends of index sync for one node."""

    def __init__(
        self,
        db: Database,
        ident: Identity,
        index: PoolIndex,
        peer: Peer,
        timeout_s: float,
        region: str = "11",
    ) -> None:
        self.db = db
        self.ident = ident
        self.index = index
        self.peer = peer
        self.timeout_s = timeout_s
        self.region = region
        # Seconds since the last good exchange with a peer (the runtime sets the gauge).
        self.on_lag: Callable[[str, float], None] = lambda _peer, _s: None
        # Keeps a measured round trip (link, from region, to region, ms); the node stores it.
        self.on_rtt: Callable[[str, str, str, float], None] = lambda _l, _a, _b, _ms: None
        # The child's word on its service replicas, sent up with each delta, and where the
        # parent takes a child's (the runtime wires both to the metric plane).
        self.service_health: Callable[[], dict[str, Any]] = dict
        self.on_service_health: Callable[[str, dict[str, Any]], None] = lambda _c, _h: None
        self._rtt: tuple[float, str] | None = None  # last RTT to the parent, not yet sent
        self._rtt_at = 0.0
        self._pushed_upto = 0  # local seq the parent has acknowledged
        self._delta_seq = 0
        self._full = True  # first delta after start is a full resend
        self._pulled_upto = 0  # parent's seq we hold
        self._parent_ok_at = utcnow()
        self._parent_down = False

    # ---- child side ---------------------------------------------------------------

    def tick(self) -> None:
        """Copy own pools into the index, push a delta up and pull the index down."""
        self.index.refresh_own()
        if self.ident.parent_url is None:
            return
        parent = self.ident.parent_code or ""
        try:
            self._measure()
            self._push()
            self._pull()
            self._parent_ok_at = utcnow()
            self._parent_down = False
            self.on_lag(parent, 0.0)
        except ComputeNetError as exc:
            silent_s = (utcnow() - self._parent_ok_at).total_seconds()
            self.on_lag(parent, silent_s)
            if silent_s > self.timeout_s and not self._parent_down:
                n = self.index.mark_unavailable(parent)
                log.warning(
                    "parent %s silent for %.0f s (%s): %d pools unavailable",
                    parent,
                    silent_s,
                    exc.message,
                    n,
                )
                self._parent_down = True
                self._pulled_upto = 0

    def _measure(self) -> None:
        """Every ``RTT_EVERY_S``: time a round trip to the parent and keep the sample."""
        now = time.monotonic()
        if now - self._rtt_at < RTT_EVERY_S:
            return
        assert self.ident.parent_url is not None and self.ident.parent_code is not None
        self._rtt_at = now
        rtt_ms, parent_region = self.peer.ping(self.ident.parent_url)
        if REGION_CODE.fullmatch(parent_region):
            self.on_rtt(link_id(self.ident.parent_code), self.region, parent_region, rtt_ms)
            self._rtt = (rtt_ms, self.region)

    def _push(self) -> None:
        assert self.ident.parent_url is not None
        after = 0 if self._full else self._pushed_upto
        records, upto = self.index.subtree_after(after)
        seq = self._delta_seq + 1
        body: dict[str, Any] = {"seq": seq, "full": self._full, "records": records}
        if health := self.service_health():
            body["services"] = health
        if self._rtt is not None:
            body["rtt_ms"], body["region"] = self._rtt
        assert self.ident.parent_code is not None
        _, reply = self.peer.call(
            self.ident.parent_url, "sync.push", body, to=self.ident.parent_code
        )
        self._rtt = None
        if reply.get("resync"):
            self._full = True
            return
        self._delta_seq = seq
        self._pushed_upto = upto
        self._full = False

    def _pull(self) -> None:
        assert self.ident.parent_url is not None and self.ident.parent_code is not None
        for _ in range(100):  # bounded: at most 100 pages a tick
            _, reply = self.peer.call(
                self.ident.parent_url,
                "index.pull",
                {"after": self._pulled_upto},
                to=self.ident.parent_code,
            )
            records: list[dict[str, Any]] = reply.get("records", [])
            self.index.apply(self.ident.parent_code, records, full=self._pulled_upto == 0)
            self._pulled_upto = int(reply.get("upto", self._pulled_upto))
            if not reply.get("more"):
                return

    # ---- parent side --------------------------------------------------------------

    def _child(self, sender: CertBody) -> FedChild:
        with self.db.read() as s:
            child = s.get(FedChild, sender.code)
        if child is None or child.public_key != sender.public_key:
            raise Forbidden(f"node {sender.code} is not a child of {self.ident.code}")
        return child

    def handle_push(self, sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a child's delta, or ask for a full resend when one was missed."""
        child = self._child(sender)
        records: list[dict[str, Any]] = list(body.get("records", []))
        self.index.check_within(sender.code, records)
        seq, full = int(body.get("seq", 0)), bool(body.get("full"))
        with self.db.write() as s:
            row = s.get(FedChild, sender.code)
            assert row is not None
            row.last_seen_at = utcnow()
            resync = child.silent or not (full or seq in (row.last_seq, row.last_seq + 1))
            if resync:
                row.silent = False
            else:
                row.last_seq = seq
        self._record_child_rtt(sender.code, body)
        if isinstance(health := body.get("services"), dict):
            self.on_service_health(sender.code, health)
        if resync:
            return {"resync": True}
        self.index.apply(sender.code, records, full=full)
        return {"resync": False}

    def _record_child_rtt(self, child: str, body: dict[str, Any]) -> None:
        """Keep the RTT a child measured to us, if its delta carries a sane one."""
        rtt, region = body.get("rtt_ms"), body.get("region")
        if not isinstance(rtt, int | float) or isinstance(rtt, bool) or not 0 <= rtt < 60_000:
            return
        if isinstance(region, str) and REGION_CODE.fullmatch(region):
            self.on_rtt(link_id(child), region, self.region, float(rtt))

    def handle_pull(self, sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        """Serve a page of the index to a child."""
        self._child(sender)
        records, upto, more = self.index.page_for(sender.code, int(body.get("after", 0)))
        return {"records": records, "upto": upto, "more": more}

    def watchdog(self) -> int:
        """Mark the pools of children silent past the timeout unavailable; report each
        child's sync lag."""
        now = utcnow()
        cutoff = now - timedelta(seconds=self.timeout_s)
        with self.db.read() as s:
            for code, seen in s.execute(select(FedChild.code, FedChild.last_seen_at)):
                if seen is not None:
                    self.on_lag(code, max(0.0, (now - seen).total_seconds()))
        with self.db.write() as s:
            silent = list(
                s.scalars(
                    select(FedChild).where(
                        FedChild.silent.is_(False), FedChild.last_seen_at < cutoff
                    )
                )
            )
            for child in silent:
                child.silent = True
        marked = 0
        for child in silent:
            n = self.index.mark_unavailable(child.code)
            log.warning(
                "child %s silent for %.0f s: %d pools unavailable", child.code, self.timeout_s, n
            )
            marked += n
        return marked
