"""The federation side of a node: identity, signed message handling and background loops."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from computenet.billing.settlement import Settlement, reconcile, settlement
from computenet.errors import ComputeNetError, Conflict, InvalidInput, NotFound
from computenet.federation.enrol import EnrolIn, EnrolOut, accept_enrolment, issue_token
from computenet.federation.envelope import Envelope, ReplayGuard, open_envelope, seal
from computenet.federation.forward import Forwarder
from computenet.federation.index import PoolIndex
from computenet.federation.keys import CertBody, Identity
from computenet.federation.messages import MESSAGES, check_body
from computenet.federation.peer import Peer
from computenet.federation.ports import FederationSettings, Tasks, Wakeup
from computenet.federation.resolve import Resolver
from computenet.federation.sync import Sync
from computenet.store.db import Database
from computenet.store.tables_federation import FedChild, FedPool
from computenet.tasks.clock import Clock, cpu_timed, utcnow

log = logging.getLogger("computenet.federation")
CHILDREN_TTL_S = 5.0
# The least time between two woken rounds of the forwarding loop: a storm of submissions
# (each wakes it) costs at most this many rounds a second, however cheap each is.
WAKE_FLOOR_S = 0.005
Handler = Callable[[CertBody, dict[str, Any]], dict[str, Any]]


class Federation:
    """Everything a node needs to take part in the federation."""

    def __init__(
        self,
        db: Database,
        settings: FederationSettings,
        ident: Identity,
        tasks: Tasks,
        changed: Wakeup,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.ident = ident
        self.changed = changed
        self.guard = ReplayGuard()
        self._has_children = False
        self._pulled_at = -1e9  # monotonic time of the last pull of forwarded tasks' state
        self._children_read_at = -CHILDREN_TTL_S
        self.peer = Peer(ident)
        self.index = PoolIndex(db, ident.code, ident.url)
        self.sync = Sync(db, ident, self.index, self.peer, settings.fed_timeout_s, settings.region)
        self.resolver = Resolver(db, ident, self.index, self.peer, settings.resolve_ttl_s)
        self.forwarder = Forwarder(db, ident, self.peer, tasks, settings.fed_timeout_s, clock)
        self.index.on_change.append(lambda _cpis: changed.fire())
        self._handlers: dict[str, Handler] = {
            "sync.push": self.sync.handle_push,
            "index.pull": self.sync.handle_pull,
            "resolve": self._handle_resolve,
            "task.forward": self._handle_forward,
            "task.confirm": self.forwarder.handle_confirm,
            "task.status": self.forwarder.handle_status,
            "task.cancel": self.forwarder.handle_cancel,
            "task.update": self._handle_update,
            "settlement.statement": self._handle_settlement,
        }
        assert set(self._handlers) == set(MESSAGES)  # one model per kind handled

    def handle(self, kind: str, env: Envelope) -> Envelope:
        """Check a signed message, run its handler and sign the reply."""
        handler = self._handlers.get(kind)
        if handler is None:
            raise InvalidInput(f"unknown federation message {kind!r}")
        sender = open_envelope(env, self.ident.root_key, self.guard, self.ident.code, kind=kind)
        try:
            check_body(kind, env.body)  # refuses a malformed body naming the field
            body = handler(sender, env.body)
        except ComputeNetError as exc:
            log.warning("refused %s message from %s: %s", kind, sender.code, exc.message)
            raise
        reply = {**body, "in_reply_to": env.nonce}
        return seal(self.ident, f"{kind}.reply", reply, sender.code)

    def _handle_settlement(self, sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        """Our statement with the sender, for it to reconcile against its own."""
        return settlement(
            self.db, self.ident.code, sender.code, str(body.get("period", ""))
        ).as_dict()

    def settle(self, peer: str, period: str) -> tuple[Settlement, Settlement, list[str]]:
        """Our statement with ``peer``, theirs (asked for over the federation, signed) and
        every difference between the two."""
        mine = settlement(self.db, self.ident.code, peer, period)
        url = self.url_of(peer)
        sender, reply = self.peer.call(url, "settlement.statement", {"period": period}, to=peer)
        if sender.code != peer:
            raise Conflict(f"{url} answered as {sender.code}, not {peer}")
        theirs = Settlement.from_dict(reply)
        return mine, theirs, reconcile(mine, theirs)

    def url_of(self, code: str) -> str:
        """The URL of node ``code``: a child, a pool owner or the parent (404 if unknown)."""
        with self.db.read() as s:
            url = s.scalar(select(FedPool.url).where(FedPool.owner == code).limit(1))
            if url is None:
                url = s.scalar(select(FedChild.url).where(FedChild.code == code))
        if url is None and self.ident.parent_url and self.ident.parent_code == code:
            url = self.ident.parent_url
        if url is None:
            raise NotFound(f"no node {code!r} known to this one")
        return str(url)

    def _handle_resolve(self, _sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.resolver.resolve(str(body.get("cpi", "")))
        return {"served_by": answer["served_by"], "record": answer["record"]}

    def _handle_forward(self, sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        out = self.forwarder.handle_forward(sender, body)
        self.changed.fire()  # the inbound loop asks the origin to confirm at once
        return out

    def _handle_update(self, sender: CertBody, body: dict[str, Any]) -> dict[str, Any]:
        # Its mirrored moves wake the long-polls on the task when they commit.
        return self.forwarder.handle_update(sender, body)

    def enrol(self, req: EnrolIn) -> EnrolOut:
        """A child enrols here."""
        out = accept_enrolment(self.db, self.ident, req)
        self._has_children = True  # forward to it from now on, not after the next re-read
        return out

    def issue_token(self, label: str, level: str, ttl_s: float) -> tuple[str, str]:
        """Issue a child enrolment token; return it and the code the child will get."""
        token = issue_token(self.db, self.ident.code, label, level, ttl_s)
        return token, f"{self.ident.code}.{label}"

    # ---- loops --------------------------------------------------------------------

    def loops(self) -> list[asyncio.Task[None]]:
        """Start the sync, watchdog and forwarding loops on the running event loop."""
        period = self.settings.fed_sync_s
        return [
            asyncio.create_task(self._every(period, self.sync.tick, False), name="fed-sync"),
            asyncio.create_task(self._every(period, self.sync.watchdog, False), name="fed-watch"),
            asyncio.create_task(self._every(period, self._tasks_tick, True), name="fed-tasks"),
        ]

    def _tasks_tick(self) -> None:
        """One round of forwarding: confirm held tasks, forward placed ones, push changes."""
        if not self._linked():
            return  # a node with neither parent nor children forwards nothing
        # Owners push their changes (task.update), so pulling the state of every forwarded
        # task is the safety net for a lost push: once a period, not on every wake-up.
        now = time.monotonic()
        pull = now - self._pulled_at >= self.settings.fed_sync_s
        if pull:
            self._pulled_at = now
        # Pushes first: a finished task's news is what a client is waiting for, and the
        # reads of the other two (most rounds find nothing to confirm or forward) need not
        # delay it.
        self.forwarder.push_updates()
        self.forwarder.confirm_inbound()
        self.forwarder.tick(pull)

    def _linked(self) -> bool:
        """Whether this node has a parent or a child (children are re-read every 5 s)."""
        if self.ident.parent_url is not None:
            return True
        now = time.monotonic()
        if now - self._children_read_at >= CHILDREN_TTL_S:
            with self.db.read() as s:
                self._has_children = s.scalar(select(FedChild.code).limit(1)) is not None
            self._children_read_at = now
        return self._has_children

    async def _every(self, period_s: float, work: Callable[[], object], wake: bool) -> None:
        loop = asyncio.get_running_loop()
        while True:
            seen = self.changed.mark()  # a change while the work runs wakes the next round
            cpu_s = 0.0
            try:
                _, cpu_s = await asyncio.to_thread(cpu_timed, work)
            except Exception:
                log.exception("federation loop %s failed", getattr(work, "__name__", work))
            # A node with neither parent nor children (as last read) forwards nothing: it
            # need not run a round on every submission, only every period in case that changes.
            if wake and (self.ident.parent_url is not None or self._has_children):
                ended = loop.time()
                await self.changed.wait(period_s, since=seen)
                # A change is acted on at once (a placement forwarded, a finished task pushed),
                # but rounds are spaced by twice the CPU time the last one took, so the loop
                # keeps to a third of a core whatever wakes it.
                spacing = max(WAKE_FLOOR_S, 2 * cpu_s)
                await asyncio.sleep(max(0.0, ended + spacing - loop.time()))
            else:
                await asyncio.sleep(period_s)

    def close(self) -> None:
        self.peer.close()
