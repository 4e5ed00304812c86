"""The node's running parts, wired together: store, auth, task service, dispatcher, loops."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial

from sqlalchemy import select

from computenet.billing.ledger import Ledger
from computenet.billing.metering import Meter, metering_period_s
from computenet.billing.reservations import Reservations
from computenet.errors import Conflict
from computenet.federation.enrol import prepare_identity
from computenet.federation.service import Federation
from computenet.model.cpi import allocate_provider, validate_node_code
from computenet.model.urlpolicy import UrlPolicy
from computenet.node import netmeasure
from computenet.node.atrest import secure_data_dir
from computenet.node.audit import AuditLog
from computenet.node.auth import Authenticator, new_token
from computenet.node.dispatch import Dispatcher
from computenet.node.leader import LeaderElection
from computenet.node.monitor import Monitor
from computenet.node.placing import Placer
from computenet.node.ratelimit import RateLimiter
from computenet.node.routing.plane import MetricPlane
from computenet.node.scheduling import SchedService
from computenet.node.secrets import SecretStore, load_key
from computenet.node.services.controller import ServiceController
from computenet.node.services.directory import ServiceDirectory
from computenet.node.settings import NodeSettings
from computenet.node.signals import Changes
from computenet.node.tasks import TaskService
from computenet.store import tables as t
from computenet.store.db import Database, sqlite_url
from computenet.store.migrate import upgrade
from computenet.tasks.clock import Clock, cpu_timed, utcnow

log = logging.getLogger("computenet.node")
STOP_WAIT_S = 10.0  # how long a stopping node waits for its background loops
# The shortest gap between scheduling passes: a burst of submissions is placed in one pass
# rather than one pass each, which under a steady submit load is most of the node's work.
SCHEDULE_GAP_S = 0.05


@dataclass(frozen=True)
class Bootstrap:
    """What a first start creates; the admin token is shown once and never stored in clear."""

    admin_token: str | None


class NodeRuntime:
    """Everything a node process holds while it runs."""

    def __init__(self, settings: NodeSettings, clock: Clock = utcnow) -> None:
        """``clock`` tells every service the time; tests pass a fake one to move it."""
        key_file = settings.secrets_key_file or settings.data_dir / "secrets.key"
        secure_data_dir(settings.data_dir, (key_file,), sqlite=settings.db_url is None)
        identity = prepare_identity(settings)  # a child enrols here on its first start
        validate_node_code(settings.node_code)
        self.settings = settings
        self.db = Database(settings.db_url or sqlite_url(settings.data_dir))
        # Who a committed change wakes: the scheduler, lease long-polls, the federation's
        # loop, long-polls on one task (each task's moves are noted in its transaction).
        self.changes = Changes(settings.node_code)
        self.db.after_commit.append(self.changes.committed)
        self.auth = Authenticator(self.db)
        self.ledger = Ledger(self.db)
        self.clock = clock
        self.reservations = Reservations(self.db, self.ledger, clock)
        self.tasks = TaskService(
            self.db,
            settings.node_code,
            UrlPolicy(settings.url_allow, settings.url_deny),
            self.ledger,
            clock,
        )
        self.dispatch = Dispatcher(
            self.db, settings, self.changes.pools_changed, self.ledger, clock
        )
        self.placer = Placer(self.db, self.dispatch.preempted, clock)
        self.leader = LeaderElection(self.db, settings.node_code)
        self.audit = AuditLog(self.db)
        self.limiter = (
            RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
            if settings.rate_limit_per_s > 0
            else None
        )
        self.sched = SchedService(self.db, self.placer)
        self.federation = Federation(
            self.db, settings, identity, self.tasks, self.changes.federation, clock
        )
        self.placer.remote_pools = self.federation.index.remote_pools
        # Other nodes' pools changed: the scheduler may place there now.
        self.federation.index.on_change.append(lambda _cpis: self.changes.pools_changed())
        self.secrets = SecretStore(self.db, load_key(key_file))
        self.dispatch.secrets = self.secrets
        self.monitor = Monitor(self.db, settings)
        self.tasks.on_created = self.monitor.task_created
        self.metric_plane = MetricPlane(
            settings.routing, settings.node_code, settings.region, self.monitor.metrics.registry
        )
        self.metric_plane.measured_rtt = partial(netmeasure.latency_matrix, self.db)
        lag = self.monitor.metrics.sync_lag
        self.federation.sync.on_lag = lambda peer, s: lag.labels(peer).set(s)
        self.federation.sync.on_rtt = partial(netmeasure.record_rtt, self.db)
        self.federation.sync.service_health = self.metric_plane.health_report
        self.federation.sync.on_service_health = self.metric_plane.child_report
        self.services = ServiceDirectory(self.db, settings.node_code)
        self.metric_plane.directory = self.services
        self.service_controller = ServiceController(
            self.db, settings.node_code, self.tasks, self.ledger, self.services, clock,
            self.sched, lambda: getattr(self, "metric_plane", None), settings.service_segment_s,
        )  # fmt: skip
        self.meter = Meter(
            self.db,
            self.ledger,
            settings.service_metering_interval_s,
            clock,
            self.metric_plane.served_counts,
        )
        self._loops: list[asyncio.Task[None]] = []
        self.draining = False  # set on shutdown: long-polls return at once
        self.ready = False  # set once the loops run: /readyz

    def drain(self) -> None:
        """Begin shutting down: end waiting long-polls so connections close promptly."""
        self.draining = True
        self.changes.fire_all()

    @property
    def node_code(self) -> str:
        """This node's code, the prefix of every identifier it allocates."""
        return self.settings.node_code

    def bootstrap(self) -> Bootstrap:
        """Migrate the store, pin the node code, and create the admin token on first start."""
        upgrade(self.db)
        with self.db.write() as s:
            code = s.get(t.NodeMeta, "node_code")
            if code is None:
                s.add(t.NodeMeta(key="node_code", value=self.node_code))
                s.add(t.NodeMeta(key="created_at", value=utcnow().isoformat()))
            elif code.value != self.node_code:
                raise Conflict(
                    f"this data directory belongs to node {code.value!r}, not {self.node_code!r}"
                )
            has_admin = s.scalars(select(t.Token.id).where(t.Token.kind == "admin")).first()
        self.tasks.resume()
        token = None if has_admin else new_token(self.db, "admin", "admin")
        return Bootstrap(admin_token=token)

    def enrol_provider(self, label: str, name: str) -> tuple[str, str]:
        """Enrol a provider under this node; return its prefix and a one-time enrolment token."""
        prefix = allocate_provider(self.node_code, label)
        with self.db.write() as s:
            if s.get(t.Provider, prefix) is None:
                s.add(t.Provider(prefix=prefix, name=name or label, created_at=utcnow()))
        return prefix, new_token(self.db, "enrol", prefix, ttl_s=7 * 24 * 3600)

    def providers(self) -> list[t.Provider]:
        """Every provider enrolled here."""
        with self.db.read() as s:
            return list(s.scalars(select(t.Provider).order_by(t.Provider.prefix)))

    # ---- background loops ---------------------------------------------------------

    async def start(self) -> None:
        """Start the scheduler and housekeeping loops on the running event loop."""
        self.changes.bind(asyncio.get_running_loop())
        self.audit.start()
        extended = await asyncio.to_thread(self.dispatch.extend_leases_after_restart)
        if extended:
            log.info("extended %d leases held across the restart", extended)
        self._loops = [
            asyncio.create_task(self._scheduler_loop(), name="scheduler"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
            asyncio.create_task(self._services_loop(), name="services"),
            asyncio.create_task(self._metering_loop(), name="metering"),
            *self.federation.loops(),
            asyncio.create_task(self.monitor.sample_loop(), name="quality-samples"),
            asyncio.create_task(self.monitor.flush_loop(), name="monitor-flush"),
            asyncio.create_task(self.metric_plane.refresh_loop(), name="metric-plane"),
        ]
        self.ready = True

    async def stop(self) -> None:
        """Stop the loops, hand leadership on, and close the store."""
        for task in self._loops:
            task.cancel()
        _done, stuck = (
            await asyncio.wait(self._loops, timeout=STOP_WAIT_S) if self._loops else (set(), set())
        )
        for task in stuck:
            log.error("background loop %s did not stop within %s s", task.get_name(), STOP_WAIT_S)
        await asyncio.to_thread(self.leader.release)
        await asyncio.to_thread(self.audit.stop)
        await self.metric_plane.aclose()
        self.federation.close()
        self.db.dispose()

    async def _lead(self) -> bool:
        """Whether this replica runs the scheduler now (always true on SQLite)."""
        return await asyncio.to_thread(self.leader.check)

    async def _scheduler_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not await self._lead():
                await asyncio.sleep(self.settings.leader_check_s)
                continue
            seen = self.changes.queue.mark()  # a submission during the pass wakes the next one
            began = loop.time()
            cpu_s = 0.0
            try:
                placed, cpu_s = await asyncio.to_thread(cpu_timed, self.placer.schedule_pass)
                self.monitor.placement_pass(loop.time() - began, placed)
            except Exception:
                self.monitor.error("scheduler")
                log.exception("scheduling pass failed")
            ended = loop.time()
            await self.changes.queue.wait(1.0, since=seen)
            # The next pass starts at least twice this one's CPU time after it, so the
            # scheduler keeps to about a third of a core however long a pass over a big
            # backlog takes; and, when this pass found tasks waiting, at least a gap after
            # it, so the rest of a burst of submissions is placed in one pass rather than one
            # pass each. After an idle pass, a submission is placed as soon as it wakes the loop.
            spacing = 2 * cpu_s
            if self.placer.found_work:
                spacing = min(1.0, max(SCHEDULE_GAP_S, spacing))
            await asyncio.sleep(max(0.0, ended + spacing - loop.time()))

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.housekeeping_s)
            if not self.leader.is_leader:
                continue
            try:
                await asyncio.to_thread(self.dispatch.expire)
                await asyncio.to_thread(self.reservations.settle_due)
            except Exception:
                self.monitor.error("housekeeping")
                log.exception("housekeeping failed")

    async def _metering_loop(self) -> None:
        # Every replica of the node meters, not only the leader: each holds its own router's
        # request counts, and the task's row lock and unique keys keep intervals single.
        period_s = metering_period_s(self.settings.service_metering_interval_s)
        while True:
            await asyncio.sleep(period_s)
            try:
                await asyncio.to_thread(self.meter.tick)
            except Exception:
                self.monitor.error("metering")
                log.exception("metering round failed")

    async def _services_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.services_reconcile_s)
            if not self.leader.is_leader:
                continue
            try:
                await asyncio.to_thread(self.service_controller.reconcile_all)
            except Exception:
                self.monitor.error("services")
                log.exception("service reconcile failed")
