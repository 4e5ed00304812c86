"""The gateway agent: enrol, declare pools, heartbeat, lease, run and report.

It connects outbound only, so providers behind firewalls can join. When the node goes away
it keeps its jobs running and reconnects with backoff; when the gateway itself restarts it
recovers its jobs from the backend and reports them, so nothing is lost or run twice.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from computenet.errors import Conflict, InvalidInput, NotFound, Unauthorized, Unavailable
from computenet.gateway.backends.base import Backend, BackendDown, BackendError, Job, JobStatus
from computenet.gateway.client import NodeClient
from computenet.gateway.metrics import GatewayMetrics
from computenet.gateway.tunnel import HealthPolicy, ReplicaTarget, Tunnel
from computenet.model.pool import PoolSpec
from computenet.model.protocol import (
    DeclarePools,
    ExecutorReport,
    Heartbeat,
    LeaseRequest,
    LogChunk,
    OutputFileLog,
    PoolLive,
    ReleaseRequest,
    TaskReport,
    UsageReport,
    check_protocol,
)
from computenet.model.task import TaskState
from computenet.model.urlpolicy import UrlPolicy, resolve_host

log = logging.getLogger("computenet.gateway")
LOG_READ_LIMIT = 256 * 1024
REPORT_CHARS = 1024 * 1024  # log text per report: well under the node's body limit
NOTES_PER_REPORT = 32
YOUNG_S = 5.0  # jobs younger than this are polled every YOUNG_POLL_S
YOUNG_POLL_S = 0.05
# A job that ended within this long after its lease is reported once, finished, not first
# RUNNING: half the reports (and the node's work on them) for short tasks. A longer one is
# reported RUNNING at the young poll after it.
RUNNING_HOLD_S = 0.05
STREAMS = ("stdout", "stderr")


@dataclass
class _Stream:
    """Log text read from the backend and how much of it the node has acknowledged."""

    read_bytes: int = 0
    acked_chars: int = 0
    pending: str = ""
    eof: bool = False  # the last read reached the end of what the backend has so far
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )


@dataclass
class _Tracked:
    """A job this gateway runs, with what it has reported so far."""

    job: Job
    submitted: bool = True  # False while backend.submit runs: its status means nothing yet
    since: float = field(default_factory=time.monotonic)
    reported: TaskState = TaskState.INITIALIZING
    executors: dict[int, tuple[datetime | None, datetime | None, int | None]] = field(
        default_factory=dict
    )
    streams: dict[tuple[int, str], _Stream] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Credential:
    """A gateway's identity on its node, kept in the state directory."""

    gateway_id: str
    credential: str
    provider_prefix: str

    @classmethod
    def load(cls, path: Path) -> Credential | None:
        """Read a saved credential, if any."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(data["gateway_id"], data["credential"], data["provider_prefix"])

    def save(self, path: Path) -> None:
        """Write the credential readable by its owner only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.__dict__, f)
        os.replace(tmp, path)


class Backoff:
    """Exponential backoff with jitter, for reconnecting."""

    def __init__(self, first_s: float = 0.5, max_s: float = 15.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def reset(self) -> None:
        """Back to the first delay after a success."""
        self._next = self.first_s

    def next(self) -> float:
        """The delay to wait now."""
        delay = self._next
        self._next = min(self.max_s, self._next * 2)
        return delay * random.uniform(0.8, 1.2)


def _node_addresses(node_url: str) -> tuple[str, ...]:
    """The node's addresses (none when its name does not resolve now): a task's egress
    never reaches them."""
    host = urlsplit(node_url).hostname
    if not host:
        return ()
    with contextlib.suppress(InvalidInput):
        return tuple(resolve_host(host))
    return ()


class GatewayAgent:
    """Serves one backend to one node."""

    def __init__(
        self,
        node_url: str,
        state_dir: Path,
        backend: Backend,
        *,
        enrol_token: str | None = None,
        name: str | None = None,
        poll_s: float = 0.25,
        lease_batch: int = 16,
        failover_after_s: float = 15.0,
        url_policy: UrlPolicy | None = None,
    ) -> None:
        self.state_dir = state_dir
        # Data URLs a task may fetch or write from here (None: as the node allowed).
        self.url_policy = url_policy
        self.backend = backend
        backend.egress_forbid = _node_addresses(node_url)
        self.enrol_token = enrol_token
        self.name = name or socket.gethostname()
        self.poll_s = poll_s
        self.lease_batch = lease_batch
        self.client = NodeClient(node_url)
        self.tracked: dict[str, _Tracked] = {}
        self.pools: dict[str, PoolSpec] = {}
        self.heartbeat_s = 5.0
        self.connected = asyncio.Event()
        # When the backend stops answering: since when, and how long before its jobs are
        # handed back to the node to run elsewhere.
        self.failover_after_s = failover_after_s
        self.down_since: float | None = None
        self._wake = asyncio.Event()
        self.metrics = GatewayMetrics()
        # Service requests come down this (outbound) tunnel once the gateway is connected.
        self.tunnel = Tunnel(
            node_url,
            lambda: self.client.credential if self.connected.is_set() else None,
            self.replica_targets,
        )

    def replica_sockets(self) -> dict[str, Path]:
        """Task id -> the unix socket reaching its server, for running service replicas."""
        out = {}
        for tr in self.tracked.values():
            if tr.job.spec.service is None or tr.reported != TaskState.RUNNING:
                continue
            path = self.backend.replica_socket(tr.job)
            if path is not None:
                out[tr.job.task_id] = path
        return out

    def replica_targets(self) -> dict[str, ReplicaTarget]:
        """``replica_sockets`` with each replica's health path, for the tunnel."""
        sockets = self.replica_sockets()
        out: dict[str, ReplicaTarget] = {}
        for tr in self.tracked.values():
            binding = tr.job.spec.service
            if binding is None or tr.job.task_id not in sockets:
                continue
            policy = HealthPolicy(
                binding.health_interval_s, binding.health_timeout_s, binding.health_failures
            )
            out[tr.job.task_id] = ReplicaTarget(
                sockets[tr.job.task_id], binding.health_path, policy
            )
        return out

    @property
    def _cred_path(self) -> Path:
        return self.state_dir / "credential.json"

    async def run(self) -> None:
        """Serve until cancelled, reconnecting with backoff whenever the node is away."""
        loop = asyncio.get_running_loop()

        def wake() -> None:  # from the backend's threads: look at the jobs now
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._wake.set)

        self.backend.watch(wake)
        for job in await asyncio.to_thread(self.backend.recover):
            log.info("recovered job %s from an earlier run", job.key)
            self.tracked[job.key] = _Tracked(job, reported=TaskState.RUNNING)
        backoff = Backoff()
        tunnel = asyncio.create_task(self.tunnel.run(), name="tunnel")
        try:
            while True:
                try:
                    await self._connect()
                    backoff.reset()
                    await self._serve()
                except (Unavailable, Unauthorized, NotFound) as exc:
                    self.connected.clear()
                    self.metrics.errors.labels("node_unavailable").inc()
                    delay = backoff.next()
                    log.warning("node unavailable (%s); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                except InvalidInput as exc:
                    # A refused declaration or another protocol version: say so plainly and
                    # keep trying, since the node may be upgraded or reconfigured meanwhile.
                    self.connected.clear()
                    delay = backoff.next()
                    log.error("node refused this gateway (%s); retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                except Exception:
                    # A bug must not stop the gateway: its jobs keep running, so log it
                    # and start over as after a lost connection.
                    self.connected.clear()
                    self.metrics.errors.labels("loop").inc()
                    delay = backoff.next()
                    log.exception("gateway loop failed; restarting in %.1f s", delay)
                    await asyncio.sleep(delay)
        finally:
            tunnel.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tunnel
            await self.client.close()

    async def _connect(self) -> None:
        cred = Credential.load(self._cred_path)
        if cred is None:
            if not self.enrol_token:
                raise Unauthorized("no saved credential and no enrolment token given")
            enrolled = await self.client.enrol(self.enrol_token, self.name)
            cred = Credential(enrolled.gateway_id, enrolled.credential, enrolled.provider_prefix)
            cred.save(self._cred_path)
            log.info("enrolled as gateway %s of %s", cred.gateway_id, cred.provider_prefix)
        self.client.credential = cred.credential
        specs = [
            # The scheduler keeps tasks a backend cannot run off its pools.
            s.model_copy(update={"unsupported": {**self.backend.unsupported(), **s.unsupported}})
            for s in await asyncio.to_thread(self.backend.pools)
        ]
        reply = await self.client.declare(DeclarePools(pools=specs))
        check_protocol(reply.protocol, f"node {self.client.base_url}")
        self.pools = {reply.cpis[s.label]: s for s in specs}
        self.heartbeat_s = reply.heartbeat_s
        self.connected.set()
        log.info("serving pools %s", ", ".join(sorted(self.pools)))

    async def _serve(self) -> None:
        loops = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._lease_loop()),
            asyncio.create_task(self._monitor_loop()),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # re-raise the failure that ended a loop
        finally:
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # ---- loops --------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            running: dict[str, int] = {}
            for tr in self.tracked.values():
                running[tr.job.pool_cpi] = running.get(tr.job.pool_cpi, 0) + 1
            healthy, why = await self._backend_health()
            live = [
                PoolLive(
                    label=spec.label,
                    running_tasks=running.get(cpi, 0),
                    healthy=healthy,
                    message=why[:1024],
                )
                for cpi, spec in self.pools.items()
            ]
            leases = {tr.job.lease_id: tr for tr in self.tracked.values()}
            rtt_ms = await self.client.ping()
            beat = Heartbeat(pools=live, leases=list(leases), rtt_ms=rtt_ms)
            reply = await self.client.heartbeat(beat)
            m = self.metrics
            m.heartbeats.inc()
            m.lease_renewals.inc(len(reply.renewed))
            m.tracked.set(len(self.tracked))
            m.backend_up.set(1 if healthy else 0)
            if rtt_ms is not None:
                m.rtt_ms.set(rtt_ms)
            for lease_id in reply.cancel:
                if lease_id in leases:
                    await asyncio.to_thread(self.backend.cancel, leases[lease_id].job)
            for lease_id in reply.lost:
                lost = leases.get(lease_id)
                if lost is not None and lost.job.key in self.tracked:
                    log.warning("lease on %s lost; stopping it", lost.job.key)
                    await self._drop(lost)
            await asyncio.sleep(self.heartbeat_s)

    async def _backend_health(self) -> tuple[bool, str]:
        """Whether the backend answers now; tracks since when it has not."""
        try:
            await asyncio.to_thread(self.backend.check)
        except BackendError as exc:
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("%s backend is down: %s", self.backend.name, exc)
            return False, exc.message
        if self.down_since is not None:
            log.info("%s backend is back", self.backend.name)
        self.down_since = None
        return True, ""

    async def _lease_loop(self) -> None:
        while True:
            if self.down_since is not None:
                await asyncio.sleep(1.0)  # take no work while the backend is down
                continue
            reply = await self.client.lease(LeaseRequest(max_tasks=self.lease_batch, wait_s=20))
            for lt in reply.tasks:
                policy = self.url_policy.to_json() if self.url_policy is not None else None
                job = Job(
                    lt.task_id, lt.attempt, lt.lease_id, lt.pool_cpi, lt.spec, lt.secrets, policy
                )
                log.info("leased %s on %s", job.key, lt.pool_cpi, extra={"trace_id": lt.trace_id})
                self.metrics.leased.inc()
                tr = _Tracked(job, submitted=False)
                # Tracked before it starts: a disconnect during submit must not orphan it.
                self.tracked[job.key] = tr
                if job.secrets and not self.backend.injects_secrets:
                    tr.notes.append(
                        f"the {self.backend.name} backend cannot pass secrets to a task without "
                        "writing them down; this task names secrets, so it was not started"
                    )
                    await self._report(tr, JobStatus(TaskState.SYSTEM_ERROR))
                    continue
                try:
                    await asyncio.to_thread(self.backend.submit, job)
                except BackendError as exc:
                    # Not the task's fault: hand it back so the node places it elsewhere.
                    log.warning("handing %s back: %s", job.key, exc)
                    await self._release(tr, exc.message)
                    continue
                except Exception as exc:
                    log.exception("could not start %s", job.key)
                    tr.notes.append(f"the {self.backend.name} backend could not start it: {exc}")
                    await self._report(tr, JobStatus(TaskState.SYSTEM_ERROR))
                    continue
                tr.notes.extend(self._start_notes(job))
                tr.submitted = True
                self._wake.set()  # look at it now, not a poll interval later

    def _start_notes(self, job: Job) -> list[str]:
        notes = [f"gateway {self.name}: {self.backend.name} backend on {job.pool_cpi}"]
        images = sorted({ex.image for ex in job.spec.executors if ex.image})
        runtime = self.backend.image_runtime(job)
        if images and runtime is not None:
            notes.append(f"images run with {runtime}")
        elif images and not self.backend.runs_images:
            shown = ", ".join(repr(i) for i in images[:5]) + (" ..." if len(images) > 5 else "")
            notes.append(
                f"image {shown} not used; ran on the host "
                "(no container runtime configured for this pool)"
            )
        return notes

    async def _monitor_loop(self) -> None:
        while True:
            self._wake.clear()
            for tr in list(self.tracked.values()):
                if not tr.submitted:
                    continue
                try:
                    await self._sync(tr)
                except (Unavailable, Unauthorized):
                    raise  # the node is away: reconnect
                except Exception as exc:
                    # One task's trouble must not stop the others: hand it back.
                    log.exception("task %s failed in the gateway", tr.job.key)
                    with contextlib.suppress(Exception):
                        await self._release(tr, f"gateway error: {type(exc).__name__}: {exc}")
            # Young jobs are watched closely (most short tasks end in their first seconds);
            # older ones at poll_s, since each look may be a request to the backend.
            now = time.monotonic()
            young = any(now - tr.since < YOUNG_S for tr in self.tracked.values())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(YOUNG_POLL_S if young else self.poll_s):
                    await self._wake.wait()

    # ---- reporting ----------------------------------------------------------------

    def _read_logs(self, tr: _Tracked, status: JobStatus) -> None:
        """Read new output into each stream's pending text, up to a bound per stream."""
        for ex in status.executors:
            for stream in STREAMS:
                st = tr.streams.setdefault((ex.index, stream), _Stream())
                while len(st.pending) < REPORT_CHARS:
                    data = self.backend.read_log(
                        tr.job, ex.index, stream, st.read_bytes, LOG_READ_LIMIT
                    )
                    st.read_bytes += len(data)
                    st.eof = len(data) < LOG_READ_LIMIT
                    st.pending += st.decoder.decode(data, final=st.eof and status.state.terminal)
                    if st.eof:
                        break

    async def _sync(self, tr: _Tracked) -> None:
        try:
            status = await asyncio.to_thread(self.backend.status, tr.job)
        except BackendDown as exc:
            now = time.monotonic()
            self.down_since = self.down_since or now
            if now - self.down_since >= self.failover_after_s:
                # Its fate cannot be known: stop what we can and let the node re-queue it.
                await self._release(tr, f"{self.backend.name} backend down: {exc.message}")
            return
        await asyncio.to_thread(self._read_logs, tr, status)
        await self._report(tr, status)

    async def _report(self, tr: _Tracked, status: JobStatus) -> None:
        """Send what is new. Each report carries a bounded amount of log text; the final
        state goes only with the last of it, so a long log is never cut short."""
        budget = REPORT_CHARS
        executors = []
        included: dict[tuple[int, str], int] = {}
        for ex in status.executors:
            seen = (ex.start_time, ex.end_time, ex.exit_code)
            chunks: dict[str, LogChunk] = {}
            for s in STREAMS:
                st = tr.streams.get((ex.index, s))
                if st is not None and st.pending and budget > 0:
                    data = st.pending[:budget]
                    budget -= len(data)
                    included[(ex.index, s)] = len(data)
                    chunks[s] = LogChunk(offset=st.acked_chars, data=data)
            if seen == tr.executors.get(ex.index) and not chunks:
                continue
            executors.append(
                ExecutorReport(
                    index=ex.index,
                    start_time=ex.start_time,
                    end_time=ex.end_time,
                    exit_code=ex.exit_code,
                    **chunks,
                )
            )
        drained = all(
            st.eof and len(st.pending) == included.get(key, 0) for key, st in tr.streams.items()
        )
        final = status.state.terminal and drained
        state = status.state if final or not status.state.terminal else TaskState.RUNNING
        notes, rest = tr.notes[:NOTES_PER_REPORT], tr.notes[NOTES_PER_REPORT:]
        if final and status.message and not rest:
            notes.append(status.message)
        if state == tr.reported and not executors and not notes:
            return
        held = status.state is TaskState.RUNNING and tr.reported is TaskState.INITIALIZING
        if held and time.monotonic() - tr.since < RUNNING_HOLD_S:
            return
        rep = TaskReport(
            lease_id=tr.job.lease_id,
            state=state,
            executors=executors,
            system_log=notes,
            usage=self._usage(tr.job, status) if final and not rest else None,
            outputs=[OutputFileLog(**o) for o in status.outputs] if final and not rest else [],
        )
        try:
            reply = await self.client.report(tr.job.task_id, rep)
        except (Conflict, NotFound) as exc:
            log.warning("report on %s refused (%s); stopping it", tr.job.key, exc)
            await self._drop(tr)
            return
        tr.notes = rest
        tr.reported = state
        for sent in executors:
            tr.executors[sent.index] = (sent.start_time, sent.end_time, sent.exit_code)
            for s in STREAMS:
                chunk = getattr(sent, s)
                if chunk is not None:
                    stream = tr.streams[(sent.index, s)]
                    stream.acked_chars += len(chunk.data)
                    stream.pending = stream.pending[len(chunk.data) :]
        if final and not rest:
            self.metrics.finished.labels(state.value).inc()
            self.tracked.pop(tr.job.key, None)
            await asyncio.to_thread(self.backend.forget, tr.job)
        elif reply.cancel:
            await asyncio.to_thread(self.backend.cancel, tr.job)

    def _usage(self, job: Job, status: JobStatus) -> UsageReport:
        need = job.spec.resources.need()
        pool = self.pools.get(job.pool_cpi)
        model = pool.accelerator.model if pool and pool.accelerator and need.accelerators else None
        return UsageReport(
            wall_s=status.wall_s,
            cpu_cores=need.cpu_cores,
            memory_mib=need.memory_mib,
            cards=need.accelerators,
            accelerator_model=model,
        )

    async def _release(self, tr: _Tracked, why: str) -> None:
        """Hand a job back to the node and forget it here."""
        self.metrics.released.inc()
        self.tracked.pop(tr.job.key, None)
        with contextlib.suppress(BackendError):
            await asyncio.to_thread(self.backend.cancel, tr.job)
        with contextlib.suppress(BackendError, OSError):
            await asyncio.to_thread(self.backend.forget, tr.job)
        # Conflict/NotFound: the lease was already gone and the node re-queued it itself.
        with contextlib.suppress(Conflict, NotFound):
            await self.client.release(
                tr.job.task_id, ReleaseRequest(lease_id=tr.job.lease_id, reason=why)
            )

    async def _drop(self, tr: _Tracked) -> None:
        """Stop a job whose lease is gone, so it does not run beside its re-queued copy."""
        if self.tracked.pop(tr.job.key, None) is None:
            return  # another loop is already dropping or finishing it
        with contextlib.suppress(BackendError, OSError):
            await asyncio.to_thread(self.backend.cancel, tr.job)
            await asyncio.to_thread(self.backend.forget, tr.job)
