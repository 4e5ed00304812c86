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
from computenet.node.views import PoolOut, TaskListOut, TaskOut
from computenet.sdk.config import load_config

_ERRORS: dict[int, type[ComputeNetError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
}


class Client:
    """Talks to one node as one user."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout_s: float = 30.0
    ) -> None:
        cfg = load_config(url, token)
        self.url = cfg.url.rstrip("/")
        headers = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
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
        if resp.status_code >= 400:
            try:
                message = resp.json().get("message") or resp.text
            except ValueError:
                message = resp.text[:200] or resp.reason_phrase
            error = _ERRORS.get(resp.status_code, Unavailable)
            raise error(str(message))
        return resp.json()

    def node(self) -> dict[str, Any]:
        """The node's code, level and versions."""
        info: dict[str, Any] = self._request("GET", "/api/v1/node")
        return info

    def submit(self, spec: TaskSpec | dict[str, Any], idempotency_key: str | None = None) -> str:
        """Submit a task and return its id. Retries are safe: they reuse one idempotency key."""
        task = spec if isinstance(spec, TaskSpec) else TaskSpec.model_validate(spec)
        key = idempotency_key or uuid.uuid4().hex
        body = task.model_dump(mode="json", exclude_defaults=True)
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
        task = self.get(task_id)
        attempts = task.attempts or []
        if not attempts:
            return ""
        chosen = (
            attempts[-1]
            if attempt is None
            else next((a for a in attempts if a.attempt == attempt), None)
        )
        if chosen is None:
            raise NotFound(f"task {task_id} has no attempt {attempt}")
        return "".join(getattr(e, stream) or "" for e in chosen.executors)

    def wait(
        self,
        task_id: str,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        on_change: Callable[[TaskOut], None] | None = None,
    ) -> TaskOut:
        """Poll until the task reaches a terminal state; call ``on_change`` on each new state."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last: tuple[TaskState, str | None, str | None] | None = None
        while True:
            task = self.get(task_id, view="BASIC")
            seen = (task.state, task.pool, task.reason)
            if seen != last and on_change is not None:
                on_change(task)
            last = seen
            if task.state.terminal:
                return task
            if deadline is not None and time.monotonic() > deadline:
                raise Unavailable(f"task {task_id} still {task.state.value} after {timeout_s} s")
            time.sleep(poll_s)

    def pools(self) -> list[PoolOut]:
        """Every pool the node knows."""
        return [PoolOut.model_validate(p) for p in self._request("GET", "/api/v1/pools")]

    def resolve(self, cpi: str) -> dict[str, Any]:
        """A CPI's resource record."""
        out: dict[str, Any] = self._request("GET", f"/api/v1/resolve/{cpi}")
        return out

    def child_token(
        self, label: str, level: str = "regional", ttl_s: float = 7 * 24 * 3600.0
    ) -> dict[str, Any]:
        """Issue a one-time enrolment token for a child node (admin)."""
        out: dict[str, Any] = self._request(
            "POST", "/federation/v1/tokens", json={"label": label, "level": level, "ttl_s": ttl_s}
        )
        return out

    def add_provider(self, label: str, name: str = "") -> dict[str, Any]:
        """Enrol a provider (admin); the reply holds a one-time gateway enrolment token."""
        out: dict[str, Any] = self._request(
            "POST", "/api/v1/providers", json={"label": label, "name": name}
        )
        return out
