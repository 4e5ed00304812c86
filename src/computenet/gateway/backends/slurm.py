"""The Slurm backend: each job attempt is one Slurm batch job; each partition is a pool.

The gateway runs Slurm's own clients (``sbatch``, ``squeue``, ``scontrol``, ``scancel``,
``sacct``) with ``SLURM_CONF`` pointing at the cluster. Each attempt gets a directory
``state_dir/jobs/<key>/`` holding the job, the generated batch script, the Slurm job id,
executor output and the progress file the script writes, so ``state_dir`` must be on a
filesystem the compute nodes see at the same path. Parsing and the script itself live in
:mod:`computenet.gateway.backends.slurm_parse`. See docs/slurm.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from computenet.errors import InvalidInput
from computenet.gateway.backends import slurm_parse as sp
from computenet.gateway.backends.base import (
    Backend,
    BackendAuthError,
    BackendDown,
    BackendError,
    Capability,
    CapacityUnavailable,
    Job,
    JobStatus,
    read_job_file,
    read_output,
)
from computenet.model.pool import PoolSpec, Region
from computenet.model.task import TaskState

COMMAND_TIMEOUT_S = 60.0  # Slurm's clients retry a dead controller for about 20 s
QUEUE_CACHE_S = 0.5
INVENTORY_CACHE_S = 10.0
NO_STAGING = "the slurm backend does not stage inputs or outputs yet"
NO_SERVICES = "a Slurm job runs on a compute node the gateway cannot reach with a socket"
_PASS_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME")


def _write(path: Path, text: str) -> None:
    """Write a file atomically (a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read(path: Path) -> str | None:
    try:
        return read_job_file(path)  # the job writes here: never follow its links
    except OSError:
        return None


class SlurmBackend(Backend):
    """Runs jobs as Slurm batch jobs; one pool per (selected, UP) partition."""

    name = "slurm"

    def __init__(
        self,
        state_dir: Path,
        *,
        partition: str | None = None,
        slurm_conf: Path | None = None,
        region: Region | None = None,
        price_per_core_hour: Decimal = Decimal(0),
        price_per_card_hour: Decimal = Decimal(0),
        label_prefix: str = "",
    ) -> None:
        """``partition``: offer only this partition (or a comma-separated list), else every
        UP partition. ``slurm_conf``: the cluster's slurm.conf, else ``$SLURM_CONF`` or
        Slurm's default. ``label_prefix`` goes before each partition name in pool labels."""
        self.jobs_dir = state_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.partitions = [p.strip() for p in partition.split(",")] if partition else None
        self.slurm_conf = slurm_conf
        self.region = region
        self.price_per_core_hour = price_per_core_hour
        self.price_per_card_hour = price_per_card_hour
        self.label_prefix = label_prefix
        self._queue: dict[str, tuple[str, str]] = {}
        self._queue_at = -math.inf
        self._inventory: list[sp.Partition] = []
        self._inventory_at = -math.inf
        self._suspect_down = False

    # --- Slurm's commands -------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        """A scrubbed environment: sbatch exports it into the job, so no gateway secrets."""
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        # SBATCH_* lets an operator set account, QoS or reservation for every job.
        env.update({k: v for k, v in os.environ.items() if k.startswith("SBATCH_")})
        conf = str(self.slurm_conf) if self.slurm_conf else os.environ.get("SLURM_CONF")
        if conf:
            env["SLURM_CONF"] = conf
        return env

    def _run(
        self, args: Sequence[str], timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client. Raises BackendDown / BackendAuthError for those failures;
        any other failure is returned (the caller reads ``returncode``)."""
        if self._suspect_down and list(args[:2]) != ["scontrol", "ping"]:
            self._ping()  # each client retries a dead controller for ~20 s: ask once first
        try:
            proc = subprocess.run(
                list(args),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._env(),
                check=False,
            )
        except FileNotFoundError:
            raise BackendDown(f"Slurm command {args[0]!r} not found on this host") from None
        except subprocess.TimeoutExpired:
            self._suspect_down = True
            raise BackendDown(f"{args[0]} did not answer in {timeout:.0f} s") from None
        if proc.returncode != 0:
            kind = sp.classify_error(proc.stderr)
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            if kind == "down":
                self._suspect_down = True
                raise BackendDown(f"Slurm unreachable: {last}")
            if kind == "auth":
                raise BackendAuthError(f"Slurm refused our credentials: {last}")
        return proc

    def _ping(self) -> None:
        proc = self._run(["scontrol", "ping"], timeout=30)
        if proc.returncode != 0 or " is UP" not in proc.stdout:
            self._suspect_down = True
            line = (proc.stdout.strip().splitlines() or [proc.stderr.strip()])[0]
            raise BackendDown(f"slurmctld is not answering: {line}")
        self._suspect_down = False

    def check(self) -> None:
        """``scontrol ping``: BackendDown unless the controller answers."""
        self._ping()

    def unsupported(self) -> dict[Capability, str]:
        """No data staging yet (docs/slurm.md lists the limits); the scheduler keeps tasks
        with URL inputs or outputs off Slurm pools."""
        return {Capability.STAGING: NO_STAGING, Capability.SERVICES: NO_SERVICES}

    # --- pools --------------------------------------------------------------------------------

    def _probe(self, fresh: bool = False) -> list[sp.Partition]:
        """Partitions and their nodes, cached for a few seconds."""
        if not fresh and time.monotonic() - self._inventory_at < INVENTORY_CACHE_S:
            return self._inventory
        parts = self._run(["scontrol", "show", "partition", "-o"])
        nodes = self._run(["scontrol", "show", "node", "-o"])
        for proc in (parts, nodes):
            if proc.returncode != 0:
                raise BackendError(f"scontrol failed: {proc.stderr.strip()[:300]}")
        self._inventory = sp.partitions(
            parts.stdout, nodes.stdout, self.partitions, self.label_prefix
        )
        self._inventory_at = time.monotonic()
        return self._inventory

    def pools(self) -> list[PoolSpec]:
        """One pool per partition, with its pending queue in ``labels`` (``pending_jobs``,
        ``wait_estimate_s``; the formula is in docs/slurm.md)."""
        partitions = self._probe(fresh=True)
        queue = self._run(["squeue", "-h", "-t", "PD", "-o", "%P|%C|%l"])
        pending = sp.parse_pending(queue.stdout) if queue.returncode == 0 else {}
        return [
            sp.pool_spec(
                p,
                pending.get(p.name, []),
                region=self.region,
                price_per_core_hour=self.price_per_core_hour,
                price_per_card_hour=self.price_per_card_hour,
            )
            for p in partitions
        ]

    # --- jobs --------------------------------------------------------------------------------

    def _dir(self, job: Job) -> Path:
        return self.jobs_dir / job.key

    def _slurm_id(self, job: Job) -> str | None:
        return (_read(self._dir(job) / "slurm_id") or "").strip() or None

    def _partition_for(self, job: Job) -> sp.Partition:
        label = job.pool_cpi.rsplit("/", 1)[-1]
        for part in self._probe():
            if part.label == label:
                return part
        raise CapacityUnavailable(f"no UP Slurm partition offers pool {label!r} here")

    def submit(self, job: Job) -> None:
        """Write the batch script and ``sbatch`` it; once per ``job.key``."""
        if job.spec.inputs or job.spec.outputs:
            # Better a clear SYSTEM_ERROR than a task that runs without its data.
            raise InvalidInput(NO_STAGING)
        jobdir = self._dir(job)
        if self._slurm_id(job) is not None:
            return
        if (jobdir / "job.json").exists():
            # An earlier submit may have died between sbatch and saving the id: adopt the job.
            found = self._run(["squeue", "-h", "-t", "all", f"--name=cn-{job.key}", "-o", "%i"])
            if found.returncode == 0 and found.stdout.split():
                _write(jobdir / "slurm_id", found.stdout.split()[0])
                return
        part = self._partition_for(job)
        need = job.spec.resources.need()
        limit = job.spec.resources.time_limit_s
        why = sp.refusal(part, need, limit)
        if why is not None:
            raise CapacityUnavailable(why)
        jobdir.mkdir(parents=True, exist_ok=True)
        _write(jobdir / "job.json", json.dumps({**job.to_json(), "partition": part.name}))
        script = jobdir / "job.sh"
        _write(script, sp.batch_script(job.key, jobdir, job.spec))
        script.chmod(0o755)
        args = [
            "sbatch",
            "--parsable",
            f"--job-name=cn-{job.key}",
            f"--partition={part.name}",
            "--nodes=1",
            "--ntasks=1",
            f"--cpus-per-task={need.cpu_cores}",
            f"--mem={need.memory_mib}",
            f"--chdir={jobdir}",
            f"--output={jobdir / 'slurm.out'}",
            f"--error={jobdir / 'slurm.err'}",
            "--no-requeue",
            "--export=ALL",
        ]
        if need.accelerators:
            args.append(f"--gres=gpu:{need.accelerators}")
        if limit:
            # Slurm counts whole minutes; the script enforces the exact seconds itself.
            args.append(f"--time={math.ceil(limit / 60)}")
        proc = self._run([*args, str(script)])
        if proc.returncode != 0:
            message = proc.stderr.strip()[-500:]
            if sp.classify_error(proc.stderr) == "capacity":
                raise CapacityUnavailable(f"Slurm refused the job: {message}")
            raise BackendError(f"sbatch failed: {message}")
        _write(jobdir / "slurm_id", sp.parse_sbatch(proc.stdout))
        self._queue_at = -math.inf

    def _queue_state(self, slurm_id: str) -> tuple[str, str] | None:
        """(state, reason) from ``squeue``; one call answers for every unfinished job of
        this backend polled within half a second."""
        if time.monotonic() - self._queue_at > QUEUE_CACHE_S or slurm_id not in self._queue:
            ids = {slurm_id}
            for jobdir in self.jobs_dir.iterdir():
                if not (jobdir / "final.json").exists():
                    ids.add((_read(jobdir / "slurm_id") or "").strip())
            ids.discard("")
            fmt = ["-o", "%i|%T|%r"]
            proc = self._run(["squeue", "-h", "-t", "all", "-j", ",".join(sorted(ids)), *fmt])
            if proc.returncode != 0 and len(ids) > 1:  # one purged id fails the whole list
                proc = self._run(["squeue", "-h", "-t", "all", "-j", slurm_id, *fmt])
            self._queue = sp.parse_squeue(proc.stdout) if proc.returncode == 0 else {}
            self._queue_at = time.monotonic()
        return self._queue.get(slurm_id)

    def _ended_record(self, slurm_id: str) -> sp.SlurmJob | None:
        """Slurm's record of a job: ``scontrol show job`` (kept MinJobAge), then ``sacct``
        (slurmdbd), then ``sacct -c`` (jobcomp/filetxt)."""
        proc = self._run(["scontrol", "show", "job", "-o", slurm_id])
        records = sp.parse_records(proc.stdout) if proc.returncode == 0 else []
        if records:
            return sp.job_from_scontrol(records[0])
        for extra in ([], ["-c"]):
            proc = self._run(["sacct", *extra, "-n", "-P", "-j", slurm_id, "-o", sp.SACCT_FIELDS])
            found = sp.parse_sacct(proc.stdout).get(slurm_id) if proc.returncode == 0 else None
            if found is not None:
                return found
        return None

    def _events(self, job: Job) -> list[dict[str, object]]:
        return sp.parse_events(_read(self._dir(job) / "status.jsonl") or "")

    def _from_events(
        self, job: Job, state: TaskState | None = None, message: str = ""
    ) -> JobStatus:
        return sp.status_from_events(
            self._events(job),
            job.spec.resources.time_limit_s,
            state,
            message,
            now_us=time.time_ns() // 1000,
        )

    def _final(self, job: Job, status: JobStatus) -> JobStatus:
        """Remember a terminal outcome: later polls then cost no Slurm command."""
        with contextlib.suppress(OSError):
            data = {"state": status.state.value, "message": status.message}
            _write(self._dir(job) / "final.json", json.dumps(data))
        return status

    def status(self, job: Job) -> JobStatus:
        """Slurm's view of the job, refined by the progress file its script writes."""
        saved = _read(self._dir(job) / "final.json")
        if saved is not None:
            data = json.loads(saved)
            return self._from_events(job, TaskState(data["state"]), data["message"])
        slurm_id = self._slurm_id(job)
        if slurm_id is None:
            return JobStatus(TaskState.SYSTEM_ERROR, message="the job never reached Slurm")
        if sp.finished(self._events(job)):
            return self._final(job, self._from_events(job))
        state, reason = self._queue_state(slurm_id) or ("", "")
        started = bool(self._events(job))  # the script runs: squeue's cache may lag
        if state in sp.PENDING_STATES and not started:
            return self._pending(job, slurm_id, reason)
        if state in sp.RUNNING_STATES or state in sp.PENDING_STATES:
            return self._from_events(job, TaskState.RUNNING)
        record = self._ended_record(slurm_id)
        if record is None:
            message = f"Slurm no longer knows job {slurm_id}"
            return self._final(job, self._from_events(job, TaskState.SYSTEM_ERROR, message))
        if record.state in sp.PENDING_STATES:  # squeue answered just before a change
            return JobStatus(TaskState.INITIALIZING)
        if record.state in sp.RUNNING_STATES:
            return self._from_events(job, TaskState.RUNNING)
        if sp.finished(self._events(job)):  # the script may have finished meanwhile
            return self._final(job, self._from_events(job))
        resources = job.spec.resources
        state_, message = sp.map_ended(record, resources.time_limit_s, resources.need().memory_mib)
        result = self._from_events(job, state_, message)
        if not self._events(job) and record.start and record.end:
            result.wall_s = Decimal(int((record.end - record.start).total_seconds()))
        return self._final(job, result)

    def _pending(self, job: Job, slurm_id: str, reason: str) -> JobStatus:
        if reason in sp.NEVER_STARTS:  # e.g. the partition shrank after we checked
            self._run(["scancel", slurm_id])
            message = f"Slurm cannot ever start this job ({reason})"
            return self._final(job, JobStatus(TaskState.SYSTEM_ERROR, message=message))
        return JobStatus(TaskState.INITIALIZING, message=f"pending: {reason}" if reason else "")

    def cancel(self, job: Job) -> None:
        """``scancel`` the job: Slurm signals all its processes (TERM, KILL after KillWait)."""
        slurm_id = self._slurm_id(job)
        if slurm_id is None or (self._dir(job) / "final.json").exists():
            return
        self._run(["scancel", slurm_id])  # on an ended job scancel complains: harmless
        self._queue_at = -math.inf

    def read_log(self, job: Job, index: int, stream: str, offset: int, limit: int) -> bytes:
        """Bytes of an executor's ``stdout``/``stderr`` file from ``offset``."""
        return read_output(self._dir(job), index, stream, offset, limit)

    def recover(self) -> list[Job]:
        """Jobs whose directories hold a Slurm job id (submitted and not yet forgotten)."""
        jobs = []
        for jobdir in sorted(self.jobs_dir.iterdir()):
            text = _read(jobdir / "job.json")
            if text is not None and (jobdir / "slurm_id").exists():
                with contextlib.suppress(ValueError, KeyError):
                    jobs.append(Job.from_json(json.loads(text)))
        return jobs

    def forget(self, job: Job) -> None:
        """Cancel the job if Slurm may still run it, then delete its directory."""
        if not (self._dir(job) / "final.json").exists():
            with contextlib.suppress(BackendError):
                self.cancel(job)
        shutil.rmtree(self._dir(job), ignore_errors=True)
