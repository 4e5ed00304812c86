"""Runs one job's executors on this host: ``python -m ...backends.local_runner DIR``.

The runner is a separate session leader so that it outlives a gateway crash: it writes each
executor's output to files and the outcome to ``result.json``, which a restarted gateway
reads back. Each executor runs in its own process group so a cancel or a time limit kills
everything it started. With a sandbox (a root gateway) each executor runs in bubblewrap as
the task's own uid, in the task's control group, which is emptied after every executor; the
runner touches the task's directory only through :class:`~computenet.gateway.beneath.TaskDir`
(no symlink followed) once the task's code has run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from computenet.gateway.backends.bwrap import TASK_PATH, SandboxGate, bwrap_command
from computenet.gateway.backends.cgroups import TaskCgroup, limits_for
from computenet.gateway.backends.containers import (
    HOLDING_RUNTIMES,
    container_command,
    container_name,
    hold_container,
    remove_container,
)
from computenet.gateway.backends.egress import (
    EGRESS_LOG,
    copy_refusals,
    egress_bridge,
    proxy_env,
    start_proxy,
    stop_proxy,
)
from computenet.gateway.backends.host_paths import SYSTEM_DIRS, can_bind, task_roots, wrap
from computenet.gateway.backends.ingress import (
    container_pid,
    free_port,
    host_bridge,
    replica_port,
    replica_socket_path,
    sockets_dir,
)
from computenet.gateway.backends.netbridge import Bridge, BridgeError, bridge_in
from computenet.gateway.backends.sandbox import TaskSandbox, limits, rlimits, set_rlimits
from computenet.gateway.beneath import TaskDir
from computenet.model.urlpolicy import UrlPolicy

KILL_GRACE_S = 3.0
_BASE_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
SECRETS_ENV = "COMPUTENET_TASK_SECRETS"  # how the gateway hands a task's secrets over


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (readers never see half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _kill_group(pgid: int) -> None:
    """SIGTERM a process group, then SIGKILL it if anything is left after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class Runner:
    """Executes the job described in ``DIR/job.json``."""

    def __init__(self, jobdir: Path, secrets: dict[str, str] | None = None) -> None:
        # First of all: a cancel that comes while we start must still be a clean cancel.
        signal.signal(signal.SIGTERM, self._on_term)
        self.dir = jobdir
        job = json.loads((jobdir / "job.json").read_text())
        self.spec: dict[str, Any] = job["spec"]
        policy = job.get("url_policy")
        self.url_policy = UrlPolicy.from_json(policy) if policy is not None else None
        self.devices: list[int] = job.get("devices") or []
        # Set on pools with accelerators: then the variable is always set, empty for a task
        # that leased no cards, so it cannot use cards another task holds.
        self.devices_env: str | None = job.get("devices_env")
        # As root, the task runs as an unprivileged user in a directory of its own elsewhere;
        # otherwise in the job's directory.
        # Secrets come down stdin (run by path: through our environment, dropped from it at
        # once), never through a file.
        from_env: dict[str, str] = json.loads(os.environ.pop(SECRETS_ENV, "{}"))
        self.secrets = from_env if secrets is None else secrets
        self.sandbox = TaskSandbox.from_json(job.get("sandbox"))
        self.work = self.sandbox.workdir(jobdir.name) if self.sandbox else jobdir / "work"
        box = self.sandbox
        self.task = TaskDir(self.work, (box.uid, box.gid) if box else None)
        resources: dict[str, Any] = self.spec.get("resources") or {}
        self.resources = resources
        self.cgroup = TaskCgroup(jobdir.name) if box else None
        self.cgroup_limits = limits_for(resources, box.max_pids) if box else None
        self.canceled = False
        self.current: subprocess.Popen[bytes] | None = None
        self.executors: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []
        self.binds = task_roots(self.spec)
        self.runtime: str | None = job.get("container_runtime")
        # The pool's egress allow-list: empty, no network at all (and no proxy).
        self.egress: list[str] = list(job.get("egress") or []) if box else []
        self.egress_forbid: list[str] = list(job.get("egress_forbid") or [])
        self.proxy: subprocess.Popen[bytes] | None = None
        self.egress_seen = 0  # how much of egress.log is already in an executor's stderr
        # A service replica: its server's port in the sandbox, or a free one on the host
        # when there is no sandbox (the host's network is shared then).
        self.replica_port = replica_port(self.spec)
        if self.replica_port is not None and box is None:
            self.replica_port = free_port()
        self.started = time.monotonic()

    def _status(self, state: str, message: str = "", final: bool = False) -> None:
        data = {
            "state": state,
            "message": message,
            "executors": self.executors,
            "outputs": self.outputs,
            "pgid": self.current.pid if self.current else None,
            "wall_s": round(time.monotonic() - self.started, 6),
        }
        write_json(self.dir / ("result.json" if final else "status.json"), data)

    def _on_term(self, _sig: int, _frame: object) -> None:
        self.canceled = True
        if self.current is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.current.pid, signal.SIGTERM)

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        # A scrubbed environment: the gateway's own secrets never reach the task.
        env = {k: os.environ[k] for k in _BASE_ENV if k in os.environ}
        env.setdefault("PATH", TASK_PATH)
        if self.sandbox is not None:
            # The gateway's PATH may name directories the task's uid cannot enter.
            env["PATH"] = TASK_PATH
        env.update(HOME=str(self.work), TMPDIR=str(self.work), PWD=str(self.work))
        if self.egress:
            env.update(proxy_env())
        if self.devices_env is not None or self.devices:
            # Only the cards leased to this task are visible to it.
            name = self.devices_env or "CUDA_VISIBLE_DEVICES"
            env[name] = ",".join(str(d) for d in self.devices)
        env.update(extra)
        env.update(self.secrets)
        if self.replica_port is not None:
            env["PORT"] = str(self.replica_port)
        return env

    def _inside(self, path: str, base: Path | None = None) -> Path:
        """Map a task path onto the job's directory: executors run on the host, so a
        container path like /data/in.txt lands under the job's work dir, never outside it."""
        start = base if base is not None and not path.startswith("/") else self.work
        target = (start / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.work.resolve()):
            raise ValueError(f"path {path!r} leads outside the task's directory")
        return target

    def _stage_inputs(self) -> None:
        for volume in self.spec.get("volumes", []):
            # Executors share the job's directory, so a TES volume is a directory in it.
            self._inside(volume).mkdir(parents=True, exist_ok=True)
        inputs = self.spec.get("inputs", [])
        if inputs:
            # Imported only when there is something to stage: it brings fsspec and aiohttp,
            # which took longer to load than a no-op task takes to run.
            from computenet.gateway.staging import StagingError, stage_input

            try:
                for item in inputs:
                    stage_input(item, self._inside(item["path"]), self.url_policy)
            except StagingError as exc:
                raise ValueError(str(exc)) from exc
        if self.sandbox is not None:
            for root in self._sandbox_roots():
                (self.work / root).mkdir(exist_ok=True)

    def _sandbox_roots(self) -> list[str]:
        """Top-level directories bound into the sandbox: those of the task's paths (a
        ``workdir`` or volume directly under ``/`` counts too)."""
        roots = set(task_roots(self.spec, on_host_only=False))
        dirs = [str(v) for v in self.spec.get("volumes", [])]
        dirs += [str(ex["workdir"]) for ex in self.spec["executors"] if ex.get("workdir")]
        for d in dirs:
            parts = [p for p in d.split("/") if p]
            if d.startswith("/") and parts and parts[0] not in SYSTEM_DIRS:
                roots.add(parts[0])
        return sorted(roots)

    def _open_ingress(self, sandbox_pid: int | None, container: str | None) -> Bridge | None:
        """For a service replica: the gateway's socket to its server (see ``ingress``);
        ``container`` names the container it runs in, if any."""
        if self.replica_port is None:
            return None
        state_dir = self.dir.parent.parent  # jobs live in <state dir>/jobs/<key>
        sockets_dir(state_dir)
        at = replica_socket_path(state_dir, self.dir.name)
        if container is not None:
            if self.sandbox is None or self.runtime not in ("podman", "docker"):
                raise BridgeError(
                    "a replica in a container image needs a root gateway with podman or docker"
                )
            assert self.current is not None  # the runtime's client, just started
            pid = container_pid(self.runtime, container, self.current)
            # In the task's cgroup: a forced cancel, which kills that, ends the bridge too.
            cg = self.cgroup
            return bridge_in(pid, at, self.replica_port, preexec=cg.join if cg else None)
        if sandbox_pid is not None:
            cgroup = self.cgroup
            join = cgroup.join if cgroup is not None else None
            return bridge_in(sandbox_pid, at, self.replica_port, preexec=join)
        return host_bridge(self.replica_port, at)

    def _stage_outputs(self) -> str | None:
        """Upload every output; return why it failed, or None."""
        outputs = self.spec.get("outputs", [])
        if not outputs:
            return None
        from computenet.gateway.staging import StagingError, stage_outputs  # see _stage_inputs

        try:
            for item in outputs:
                staged = stage_outputs(item, self.task, self.url_policy)
                self.outputs.extend(f.to_json() for f in staged)
        except (StagingError, OSError, ValueError) as exc:
            return f"cannot store an output: {exc}"
        return None

    def run(self) -> None:
        """Run every executor in order and write the outcome."""
        if self.egress:
            # Started first: its Python start overlaps the staging of inputs.
            self.proxy = start_proxy(self.dir, self.egress, self.egress_forbid)
        try:
            self._prepare_and_run()
        finally:
            if self.proxy is not None:
                stop_proxy(self.proxy)

    def _prepare_and_run(self) -> None:
        self.work.mkdir(exist_ok=True)
        try:
            self._stage_inputs()
            if self.sandbox is not None:
                self.sandbox.hand_over(self.work)  # staged as root, used by the task
        except (OSError, ValueError) as exc:
            self._status("SYSTEM_ERROR", f"cannot stage an input: {exc}", final=True)
            return
        if self.cgroup is not None and self.cgroup_limits is not None:
            try:
                self.cgroup.create(self.cgroup_limits)
            except OSError as exc:
                self._status("SYSTEM_ERROR", f"cannot make the task's cgroup: {exc}", final=True)
                return
        try:
            self._run_all()
        finally:
            if self.cgroup is not None:
                self.cgroup.remove()

    def _run_all(self) -> None:
        limit = self.spec.get("resources", {}).get("time_limit_s")
        deadline = self.started + limit if limit else None
        self._status("RUNNING")
        for index, ex in enumerate(self.spec["executors"]):
            if self.canceled:
                break
            outcome = self._run_one(index, ex, deadline)
            if outcome is not None:
                self._status(outcome[0], outcome[1], final=True)
                return
        if self.canceled:
            self._status("CANCELED", "canceled", final=True)
            return
        failed = self._stage_outputs()
        if failed is not None:
            self._status("SYSTEM_ERROR", failed, final=True)
        else:
            self._status("COMPLETE", "", final=True)

    def _run_one(
        self, index: int, ex: dict[str, Any], deadline: float | None
    ) -> tuple[str, str] | None:
        """Run one executor; return a final (state, message) to stop early, else None."""
        entry: dict[str, Any] = {"index": index, "start_time": _now()}
        self.executors.append(entry)
        gate: SandboxGate | None = None
        bridge: Bridge | None = None
        oom_before = self.cgroup.oom_kills() if self.cgroup is not None else 0
        ingress: Bridge | None = None
        sandbox_pid: int | None = None
        out = (self.dir / f"exec-{index}.stdout").open("wb")
        err = (self.dir / f"exec-{index}.stderr").open("wb")
        stdin: Any = subprocess.DEVNULL
        try:
            workdir = str(ex.get("workdir") or "")
            if self.sandbox is not None:
                self._check_roots()
                # Made (or checked) without following links, owned by the task's user, so
                # that a workdir that is not also a volume is writable by the task.
                self.task.makedirs(workdir)
                cwd = self.work
            else:
                cwd = self._inside(workdir) if workdir else self.work
                cwd.mkdir(parents=True, exist_ok=True)
            if ex.get("stdin"):
                stdin = self.task.open_read(posixpath.join(workdir or "/", ex["stdin"]))
            command = list(ex["command"])
            preexec: Callable[[], None] | None = limits(self.resources)
            if self.runtime and ex.get("image"):
                roots = (
                    self._sandbox_roots()
                    if self.sandbox
                    else task_roots(self.spec, on_host_only=False)
                )
                # With egress, the container is made first and bridged before it runs.
                held = bool(self.egress) and self.runtime in HOLDING_RUNTIMES
                command = container_command(
                    self.runtime,
                    ex["image"],
                    command,
                    self.work,
                    roots,
                    ex.get("workdir"),
                    {**(ex.get("env") or {}), **(proxy_env() if held else {})},
                    self.sandbox,
                    self.cgroup_limits,
                    self._container_name(index),
                    held,
                )
                if held:
                    assert self.proxy is not None
                    pid, command = hold_container(
                        self.runtime, command, self._container_name(index)
                    )
                    bridge = egress_bridge(pid, self.proxy, self.dir, self.cgroup)
                # The runtime (Go) reserves address space far beyond any memory request: its
                # limits are the container's own cgroup, set by the flags above.
                preexec = limits({**self.resources, "accelerator": True})
            elif self.sandbox is not None:
                gate = SandboxGate()
                command = bwrap_command(
                    command,
                    work=self.work,
                    roots=self._sandbox_roots(),
                    chdir=workdir or str(self.work.resolve()),
                    uid=self.sandbox.uid,
                    gid=self.sandbox.gid,
                    devices=bool(self.devices),
                    info_fd=gate.info_w,
                    block_fd=gate.block_r,
                )
                preexec = None  # the gate below: limits and cgroup set from outside
            elif self.binds and can_bind():
                # Unisolated (--run-as root): the task's paths in a private mount namespace.
                command = wrap(command, self.work, self.binds)
            self.current = subprocess.Popen(
                command,
                cwd=cwd,
                env=self._env(ex.get("env") or {}),
                stdin=stdin,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=gate.child_fds() if gate else (),
            )
            if gate is not None:
                sandbox_pid = gate.sandbox_pid()
                bridge = self._prepare(sandbox_pid)
                gate.release()
            in_container = bool(self.runtime and ex.get("image"))
            ingress = self._open_ingress(
                sandbox_pid, self._container_name(index) if in_container else None
            )
        except (OSError, ValueError, BridgeError) as exc:
            if gate is not None:
                gate.abort(self.current)
                self.current = None
            if bridge is not None:
                bridge.close()
            if self.runtime and ex.get("image"):
                self._remove_container(index)  # a held one was made before it could fail
            if isinstance(exc, BridgeError):
                if self.current is not None:
                    _kill_group(self.current.pid)  # a replica nobody can reach serves no one
                    self.current.wait()
                    self.current = None
                out.close()
                err.close()
                entry.update(end_time=_now())
                what = "egress proxy" if bridge is None and self.egress else "replica socket"
                return ("SYSTEM_ERROR", f"cannot open the task's {what}: {exc.message}")
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            err.write(f"cannot start {ex['command'][0]!r}: {why}\n".encode())
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            entry.update(end_time=_now(), exit_code=code)
            out.close()
            err.close()
            if ex.get("ignore_error"):
                return None
            return ("EXECUTOR_ERROR", f"executor {index} could not start: {why}")
        self._status("RUNNING")
        timed_out = False
        while True:
            try:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                code = self.current.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(self.current.pid)
        # Anything the executor left running in its group goes too.
        if self._group_alive(self.current.pid):
            _kill_group(self.current.pid)
        if self.cgroup is not None:
            self.cgroup.kill()  # and whatever left the group (setsid, double fork)
        if bridge is not None:
            bridge.close()
        if ingress is not None:
            ingress.close()
        if self.egress:
            self.egress_seen = copy_refusals(self.dir / EGRESS_LOG, self.egress_seen, err)
        if self.runtime and ex.get("image"):
            self._remove_container(index)
        out.close()
        err.close()
        if isinstance(stdin, io.IOBase):
            stdin.close()
        self._copy_outputs(index, ex)
        entry.update(end_time=_now(), exit_code=code)
        self.current = None
        self._status("RUNNING")
        if self.canceled:
            return ("CANCELED", "canceled")
        if timed_out:
            limit = self.spec["resources"]["time_limit_s"]
            return ("EXECUTOR_ERROR", f"time limit of {limit} s exceeded")
        if code != 0 and not ex.get("ignore_error"):
            if self.cgroup is not None and self.cgroup.oom_kills() > oom_before:
                ram_gb = self.resources.get("ram_gb")
                return (
                    "EXECUTOR_ERROR",
                    f"executor {index} ran out of memory: killed at its limit of {ram_gb} GB "
                    f"(exit code {code})",
                )
            return ("EXECUTOR_ERROR", f"executor {index} exited with code {code}")
        return None

    def _prepare(self, pid: int) -> Bridge | None:
        """The sandbox ``pid`` exists and waits, nothing of the task's code has run: put it
        in the task's control group, set its limits, open its egress if the pool has one."""
        assert self.sandbox is not None
        if self.cgroup is not None:
            self.cgroup.add(pid)
        set_rlimits(pid, rlimits(self.resources, self.sandbox.max_pids))
        if not self.egress:
            return None
        assert self.proxy is not None  # started with the runner when egress is set
        return egress_bridge(pid, self.proxy, self.dir, self.cgroup)

    def _copy_outputs(self, index: int, ex: dict[str, Any]) -> None:
        """Also write the executor's output where its spec asks (TES stdout/stderr paths),
        beneath the task's directory and never through a link the task made."""
        workdir = str(ex.get("workdir") or "/")
        for stream in ("stdout", "stderr"):
            if ex.get(stream):
                with (
                    contextlib.suppress(OSError, ValueError),
                    (self.dir / f"exec-{index}.{stream}").open("rb") as src,
                ):
                    self.task.write_from(posixpath.join(workdir, ex[stream]), src)

    def _check_roots(self) -> None:
        """Before an executor starts (none of the task's processes is alive then), every
        directory bubblewrap binds must still be a real directory: an earlier executor may
        have swapped one for a symlink, which root would follow when binding it."""
        for root in self._sandbox_roots():
            if self.task.kind(root) != "dir":
                raise ValueError(f"/{root} was replaced by something other than a directory")

    def _container_name(self, index: int) -> str:
        return container_name(self.dir.name, index)

    def _remove_container(self, index: int) -> None:
        """Stop the container whatever happened to its client (a killed client leaves it)."""
        if self.runtime:
            remove_container(self.runtime, self._container_name(index))

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True


def main(argv: list[str]) -> int:
    """Entry point: run the job in ``argv[1]``, or with no argument the job named on stdin
    (one JSON line: ``dir`` and ``secrets``): the gateway may start a runner before it
    has a job for it, and an empty stdin (the gateway went away) ends it quietly."""
    if len(argv) == 2:
        Runner(Path(argv[1])).run()
        return 0
    if len(argv) != 1:
        print("usage: python -m computenet.gateway.backends.local_runner [JOBDIR]", file=sys.stderr)
        return 2
    line = sys.stdin.buffer.readline()
    if not line:
        return 0
    order = json.loads(line)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # nothing more comes down the pipe
    os.close(null)
    Runner(Path(order["dir"]), dict(order.get("secrets") or {})).run()
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    # The outcome is written and the task's processes and cgroup are gone; the gateway
    # learns of the end when this process exits, and an orderly interpreter shutdown
    # (tearing down every module) took about 9 ms, which every task waited for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
