"""The Python SDK: a small synchronous client for a node's native API.

from computenet.sdk import Client
c = Client()                       # URL and token from the config file or environment
tid = c.submit({"executors": [{"command": ["echo", "hello"]}]})
task = c.wait(tid)
print(task.state, c.logs(tid))
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console

from computenet.errors import (
    ComputeNetError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unavailable,
)
from computenet.model.task import TaskSpec, TaskState
from computenet.node.views import PoolOut, TaskListOut, TaskOut, UsageOut
from computenet.sdk.config import load_config

_ERRORS: dict[int, type[ComputeNetError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
}


def check(resp: httpx.Response) -> None:
    """Raise the error of our small tree that an error response stands for."""
    if resp.status_code >= 400:
        try:
            message = resp.json().get("message") or resp.text
        except ValueError:
            message = resp.text[:200] or resp.reason_phrase
        error = _ERRORS.get(resp.status_code, Unavailable)
        raise error(str(message))


def submit_body(spec: TaskSpec | dict[str, Any]) -> dict[str, Any]:
    """A task validated against the server's own schema, as the API takes it."""
    task = spec if isinstance(spec, TaskSpec) else TaskSpec.model_validate(spec)
    return task.model_dump(mode="json", exclude_defaults=True)


def attempt_logs(task: TaskOut, stream: str, attempt: int | None) -> str:
    """The executors' output of one attempt (the latest by default), concatenated."""
    attempts = task.attempts or []
    if not attempts:
        return ""
    chosen = (
        attempts[-1]
        if attempt is None
        else next((a for a in attempts if a.attempt == attempt), None)
    )
    if chosen is None:
        raise NotFound(f"task {task.id} has no attempt {attempt}")
    return "".join(getattr(e, stream) or "" for e in chosen.executors)


def progress_printer() -> Callable[[TaskOut], None]:
    """An ``on_change`` that prints each new state (and pool or reason) with Rich."""
    console = Console(stderr=True)

    def show(task: TaskOut) -> None:
        where = f" on {task.pool}" if task.pool else ""
        why = f" ({task.reason})" if task.reason else ""
        console.print(f"[bold]{task.id}[/bold] {task.state.value}{where}{why}")

    return show


def connection(url: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    """The node's base URL and the auth headers, from arguments, environment or config."""
    cfg = load_config(url, token)
    return cfg.url.rstrip("/"), ({"Authorization": f"Bearer {cfg.token}"} if cfg.token else {})


class Waiter:
    """What ``wait`` tracks between polls: the last state seen and the deadline."""

    def __init__(
        self,
        task_id: str,
        timeout_s: float | None,
        on_change: Callable[[TaskOut], None] | None,
        progress: bool,
    ) -> None:
        self.task_id, self.timeout_s = task_id, timeout_s
        self.on_change = progress_printer() if progress and on_change is None else on_change
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.last: tuple[TaskState, str | None, str | None] | None = None

    def done(self, task: TaskOut) -> bool:
        """Report a new state; True once final. Raises ``Unavailable`` past the deadline."""
        seen = (task.state, task.pool, task.reason)
        if seen != self.last and self.on_change is not None:
            self.on_change(task)
        self.last = seen
        if task.state.terminal:
            return True
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Unavailable(
                f"task {self.task_id} still {task.state.value} after {self.timeout_s} s"
            )
        return False


class Client:
    """Talks to one node as one user."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.url, headers = connection(url, token)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, retries: int = 0, **kw: Any) -> Any:
        for attempt in range(retries + 1):
            try:
                resp = self._http.request(method, path, **kw)
                break
            except httpx.HTTPError as exc:
                if attempt == retries:
                    raise Unavailable(f"cannot reach node at {self.url}: {exc}") from None
                time.sleep(0.5 * 2**attempt)
        check(resp)
        return resp.json()

    def node(self) -> dict[str, Any]:
        """The node's code, level and versions."""
        info: dict[str, Any] = self._request("GET", "/api/v1/node")
        return info

    def submit(self, spec: TaskSpec | dict[str, Any], idempotency_key: str | None = None) -> str:
        """Submit a task and return its id. Retries are safe: they reuse one idempotency key."""
        key = idempotency_key or uuid.uuid4().hex
        body = submit_body(spec)
        out = self._request(
            "POST", "/api/v1/tasks", retries=3, json=body, headers={"Idempotency-Key": key}
        )
        return str(out["id"])

    def get(self, task_id: str, view: str = "FULL") -> TaskOut:
        """One task."""
        return TaskOut.model_validate(
            self._request("GET", f"/api/v1/tasks/{task_id}", params={"view": view})
        )

    def list_tasks(
        self,
        page_size: int = 100,
        page_token: str | None = None,
        state: str | None = None,
        view: str = "BASIC",
    ) -> TaskListOut:
        """A page of tasks, newest first."""
        params: dict[str, Any] = {"page_size": page_size, "view": view}
        if page_token:
            params["page_token"] = page_token
        if state:
            params["state"] = state
        return TaskListOut.model_validate(self._request("GET", "/api/v1/tasks", params=params))

    def cancel(self, task_id: str) -> TaskState:
        """Cancel a task; returns CANCELED, or CANCELING while its gateway stops it."""
        out = self._request("POST", f"/api/v1/tasks/{task_id}/cancel")
        return TaskState(out["state"])

    def logs(self, task_id: str, stream: str = "stdout", attempt: int | None = None) -> str:
        """The executors' output of one attempt (the latest by default), concatenated."""
        return attempt_logs(self.get(task_id), stream, attempt)

    def usage(self, task_id: str) -> list[UsageOut]:
        """Measured usage of each finished attempt (card-hours, normalized compute)."""
        return self.get(task_id).usage or []

    def wait(
        self,
        task_id: str,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        on_change: Callable[[TaskOut], None] | None = None,
        progress: bool = False,
    ) -> TaskOut:
        """Poll until the task reaches a terminal state; call ``on_change`` on each new state
        (``progress=True`` prints each new state with Rich)."""
        waiter = Waiter(task_id, timeout_s, on_change, progress)
        while True:
            task = self.get(task_id, view="BASIC")
            if waiter.done(task):
                return task
            time.sleep(poll_s)

    def pools(self) -> list[PoolOut]:
        """Every pool the node knows."""
        return [PoolOut.model_validate(p) for p in self._request("GET", "/api/v1/pools")]

    def resolve(self, cpi: str) -> dict[str, Any]:
        """A CPI's resource record."""
        out: dict[str, Any] = self._request("GET", f"/api/v1/resolve/{cpi}")
        return out

    def add_provider(self, label: str, name: str = "") -> dict[str, Any]:
        """Enrol a provider (admin); the reply holds a one-time gateway enrolment token."""
        out: dict[str, Any] = self._request(
            "POST", "/api/v1/providers", json={"label": label, "name": name}
        )
        return out
