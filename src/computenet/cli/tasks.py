"""Client commands: submit, status, list, logs, cancel, pools, resolve, provider."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.status import Status
from rich.table import Table

from computenet.cli.output import console, err_console, fail, print_json, styled_state
from computenet.cli.taskview import (
    FAILED,
    failure_lines,
    local_file_hint,
    local_inputs,
    unknown_field,
)
from computenet.errors import InvalidInput, Unavailable
from computenet.model.task import Policy, TaskSpec
from computenet.node.views import TaskOut
from computenet.sdk.client import Client, attempt_logs

Url = Annotated[str | None, typer.Option("--url", help="node URL [env COMPUTENET_URL]")]
Token = Annotated[str | None, typer.Option("--token", help="bearer token [env COMPUTENET_TOKEN]")]
Json = Annotated[bool, typer.Option("--json", help="print JSON")]


def _load_spec(path: Path) -> dict[str, Any]:
    return load_file(path, "task")


def load_file(path: Path, what: str) -> dict[str, Any]:
    """A YAML (or ``.json``) file holding one mapping, or one clear line and exit."""
    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        fail(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}")
    if not isinstance(data, dict):
        fail(f"{path} must hold one {what} (a mapping), not {type(data).__name__}")
    return data


def _spec(data: dict[str, Any]) -> TaskSpec:
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelled key also leaves the real one missing: name the misspelling.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        where = ".".join(str(p) for p in first["loc"]) or "task"
        if first["type"] == "extra_forbidden":
            raise InvalidInput(unknown_field(first["loc"])) from None
        raise InvalidInput(f"{where}: {first['msg']}") from None


TimeoutS = Annotated[
    float | None,
    typer.Option(min=0.1, help="with --wait: stop waiting after this long (the task stays)"),
]


def _watch(client: Client, task_id: str, timeout_s: float | None = None) -> TaskOut:
    """Wait for a task with a live status line; print each state change with the reason it
    waits; past ``timeout_s`` stop with one line saying where it is and why. A failed task
    comes back in full, so its exit code and stderr can be shown."""
    started = time.monotonic()
    last: list[TaskOut] = []
    with Status(f"{task_id}: waiting", console=console) as status:

        def changed(task: TaskOut) -> None:
            last[:] = [task]
            elapsed = time.monotonic() - started
            where = f" on {task.pool}" if task.pool else ""
            why = f" ({task.reason})" if task.reason and not task.state.terminal else ""
            console.print(
                f"  {elapsed:6.1f}s  {styled_state(task.state.value)}{where}{why}",
                highlight=False,
            )
            status.update(f"{task_id}: {task.state.value}{where} (Ctrl-C stops watching)")

        try:
            task = client.wait(task_id, poll_s=0.3, timeout_s=timeout_s, on_change=changed)
        except Unavailable:
            if timeout_s is None or time.monotonic() - started < timeout_s:
                raise  # the node went away, not the time: say that
            seen = last[0] if last else client.get(task_id, view="BASIC")
            why = f": {seen.reason}" if seen.reason else ""
            fail(
                f"task {task_id} still {seen.state.value} after {timeout_s:g} s{why} "
                f"(it goes on: `computenet explain {task_id}` says more, `computenet cancel` "
                "stops it)"
            )
    return client.get(task_id) if task.state.value in FAILED else task


def _show_failure(task: TaskOut) -> None:
    for line in failure_lines(task):
        console.print(line, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the client commands to ``app``."""

    @app.command(context_settings={"allow_interspersed_args": False})
    def submit(
        command: Annotated[list[str] | None, typer.Argument(help="-- program args...")] = None,
        file: Annotated[Path | None, typer.Option("--file", "-f", help="task YAML/JSON")] = None,
        name: Annotated[str | None, typer.Option()] = None,
        image: Annotated[str, typer.Option(help="container image")] = "",
        cpus: Annotated[int | None, typer.Option(help="CPU cores")] = None,
        ram_gb: Annotated[float | None, typer.Option(help="memory in GB")] = None,
        gpus: Annotated[int | None, typer.Option(help="accelerator cards")] = None,
        gpu_model: Annotated[str | None, typer.Option(help="catalog id")] = None,
        time_limit_s: Annotated[int | None, typer.Option(help="wall-clock limit")] = None,
        region: Annotated[list[str] | None, typer.Option(help="allowed GB/T 2260 region")] = None,
        max_price: Annotated[str | None, typer.Option(help="max price per card-hour")] = None,
        priority: Annotated[int | None, typer.Option()] = None,
        policy: Annotated[Policy | None, typer.Option(help="placement policy")] = None,
        dataset: Annotated[list[str] | None, typer.Option(help="dataset the task reads")] = None,
        runtime_hint_s: Annotated[int | None, typer.Option(help="run time on a V100")] = None,
        secret: Annotated[
            list[str] | None,
            typer.Option(help="ENV=NAME: put secret NAME in variable ENV at run time (repeat)"),
        ] = None,
        input_file: Annotated[
            list[str] | None,
            typer.Option(
                "--input",
                help="LOCAL[=PATH]: send a local file (text, up to 128 KiB) with the task, "
                "at PATH in its directory [default: its name] (repeat)",
            ),
        ] = None,
        wait: Annotated[bool, typer.Option("--wait", "-w", help="wait and show progress")] = False,
        timeout_s: TimeoutS = None,
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """Submit a task from a file (-f task.yaml) or a command (-- echo hello)."""
        if (file is None) == (not command):
            fail("give either --file TASK.yaml or a command after --", 2)
        data: dict[str, Any] = (
            _load_spec(file) if file else {"executors": [{"image": image, "command": command}]}
        )
        res = data.setdefault("resources", {})
        place = data.setdefault("placement", {})
        for key, value in (("cpu_cores", cpus), ("ram_gb", ram_gb), ("time_limit_s", time_limit_s)):
            if value is not None:
                res[key] = value
        if gpus is not None or gpu_model is not None:
            res["accelerator"] = {"count": gpus or 1, "model": gpu_model}
        if name is not None:
            data["name"] = name
        if region:
            place["regions"] = region
        if max_price is not None:
            place["max_price_per_card_hour"] = max_price
        if priority is not None:
            place["priority"] = priority
        if policy is not None:
            place["policy"] = policy.value
        if dataset:
            place["datasets"] = dataset
        if runtime_hint_s is not None:
            place["runtime_hint_s"] = runtime_hint_s
        for pair in secret or []:
            env, sep, secret_name = pair.partition("=")
            if not sep or not env or not secret_name:
                fail(f"--secret takes ENV=NAME, not {pair!r}", 2)
            data.setdefault("secrets", {})[env] = secret_name
        if input_file:
            data.setdefault("inputs", []).extend(local_inputs(input_file))
        if command:
            hint = local_file_hint(command, data.get("inputs", []))
            if hint is not None:
                err_console.print(hint, highlight=False, markup=False)
        spec = _spec(data)
        with Client(url, token) as client:
            task_id = client.submit(spec)
            if not wait:
                print_json({"id": task_id}) if json_out else console.print(task_id)
                return
            console.print(task_id, highlight=False)
            task = _watch(client, task_id, timeout_s)
            if json_out:
                print_json(task)
            else:
                _show_failure(task)
            if task.state.value != "COMPLETE":
                raise typer.Exit(1)

    @app.command()
    def status(
        task_id: str,
        wait: Annotated[bool, typer.Option("--wait", "-w", help="wait and show progress")] = False,
        timeout_s: TimeoutS = None,
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """A task's state (with --json: everything about it); why it waits or failed."""
        with Client(url, token) as client:
            task = _watch(client, task_id, timeout_s) if wait else client.get(task_id)
        if json_out:
            print_json(task)
            return
        console.print(task.state.value, highlight=False)
        if task.reason and not task.state.terminal:
            console.print(f"  why: {task.reason}", highlight=False)
        _show_failure(task)

    @app.command("list")
    def list_(
        state: Annotated[str | None, typer.Option(help="only tasks in this state")] = None,
        limit: Annotated[int, typer.Option(min=1, max=2047)] = 50,
        page_token: Annotated[
            str | None, typer.Option(help="the next page, as the previous one said")
        ] = None,
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """Recent tasks, newest first; why each waiting task waits."""
        with Client(url, token) as client:
            page = client.list_tasks(
                page_size=limit, page_token=page_token, state=state.upper() if state else None
            )
        if json_out:
            print_json(page)
            return
        table = Table("id", "name", "state", "pool", "created", "why")
        for t in page.tasks:
            created = t.created_at.strftime("%Y-%m-%d %H:%M:%S") if t.created_at else ""
            why = "" if t.state.terminal else (t.reason or "")
            table.add_row(
                t.id, t.name or "", styled_state(t.state.value), t.pool or "", created, why
            )
        console.print(table)
        if page.next_page_token:
            console.print(
                f"more tasks: computenet list --limit {limit} --page-token {page.next_page_token}",
                highlight=False,
            )

    @app.command()
    def logs(
        task_id: str,
        stdout: Annotated[bool, typer.Option("--stdout", help="only stdout")] = False,
        stderr: Annotated[bool, typer.Option("--stderr", help="only stderr")] = False,
        attempt: Annotated[int | None, typer.Option(help="attempt [default: latest]")] = None,
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """A task's output: every executor's stdout, then its stderr on stderr under a
        "--- stderr ---" line (--stdout or --stderr: only that stream, unlabelled)."""
        if stdout and stderr:
            fail("give --stdout or --stderr, not both (without either, both are shown)", 2)
        with Client(url, token) as client:
            task = client.get(task_id)
        texts = {s: attempt_logs(task, s, attempt) for s in ("stdout", "stderr")}
        if json_out:
            wanted = ["stdout"] if stdout else ["stderr"] if stderr else ["stdout", "stderr"]
            print_json({"id": task_id, **{s: texts[s] for s in wanted}})
        elif stdout or stderr:
            typer.echo(texts["stderr" if stderr else "stdout"], nl=False)
        else:
            typer.echo(texts["stdout"], nl=False)
            if texts["stderr"]:
                typer.echo("--- stderr ---", err=True)
                typer.echo(texts["stderr"], nl=False, err=True)

    @app.command()
    def cancel(task_id: str, json_out: Json = False, url: Url = None, token: Token = None) -> None:
        """Cancel a task (running work is stopped, its processes killed)."""
        with Client(url, token) as client:
            state = client.cancel(task_id)
        if json_out:
            print_json({"id": task_id, "state": state.value})
        else:
            console.print(f"{task_id} {state.value}", highlight=False)

    @app.command()
    def pools(json_out: Json = False, url: Url = None, token: Token = None) -> None:
        """Pools known to the node, with live state and price."""
        with Client(url, token) as client:
            rows = client.pools()
        if json_out:
            print_json({"pools": [p.model_dump(mode="json", exclude_none=True) for p in rows]})
            return
        table = Table(
            "cpi", "health", "cores", "memory GiB", "accelerator", "region", "price", "running"
        )
        for p in rows:
            s = p.spec
            acc = f"{s.accelerator.count} x {s.accelerator.model}" if s.accelerator else "-"
            price = (
                f"{s.price_per_card_hour}/card-h"
                if s.accelerator
                else f"{s.price_per_core_hour}/core-h"
            )
            table.add_row(
                p.cpi,
                p.health,
                str(s.cpu_cores * s.machines),
                f"{s.memory_mib * s.machines / 1024:.1f}",
                acc,
                s.region.code,
                price,
                str(p.running_tasks),
            )
        console.print(table)

    @app.command()
    def resolve(
        cpi: Annotated[str, typer.Argument(help="node/provider/pool, or a node code")],
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """Resolve a CPI (node/provider/pool) to its resource record, or a node code (cn.31)
        to that node's URL and pools."""
        with Client(url, token) as client:
            record = client.resolve(cpi)
        if json_out:
            print_json(record)
            return
        if record["record"].get("kind") == "node":
            node = record["record"]
            console.print(
                f"node {node['code']} at {node['url']}: "
                f"{node['pools']} pool{'' if node['pools'] == 1 else 's'} "
                f"({node['healthy_pools']} healthy)",
                highlight=False,
            )
            return
        spec = record["record"]["spec"]
        console.print(f"{record['cpi']}  served by node {record['served_by']}", highlight=False)
        console.print(
            f"  health {record['record']['health']}, {spec['cpu_cores']} cores, "
            f"region {spec['region']['code']}, backend {spec['backend']}",
            highlight=False,
        )

    @app.command()
    def provider(
        label: str,
        name: Annotated[str, typer.Option()] = "",
        json_out: Json = False,
        url: Url = None,
        token: Token = None,
    ) -> None:
        """Enrol a provider and print its gateway's one-time enrolment token (admin)."""
        with Client(url, token) as client:
            out = client.add_provider(label, name)
        if json_out:
            print_json(out)
            return
        console.print(
            f"provider {out['prefix']} enrolled; start its gateway with:", highlight=False
        )
        console.print(
            f"  computenet gateway --node {client.url} --state-dir ./gateway "
            f"--token {out['enrolment_token']}",
            highlight=False,
        )
