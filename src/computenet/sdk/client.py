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
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from rich.console import Console

from computenet.errors import NotFound, Unavailable, error_from_answer
from computenet.model.api import PoolOut, TaskListOut, TaskOut, UsageOut
from computenet.model.service import ServiceSpec
from computenet.model.service_api import DeployOut, KeyOut, ReplicaLogsOut, ServiceOut
from computenet.model.task import TaskSpec, TaskState
from computenet.sdk import service_calls
from computenet.sdk.config import load_config

T = TypeVar("T")


def check(resp: httpx.Response) -> None:
    """Raise the error of our small tree that an error response stands for."""
    if resp.status_code >= 400:
        raise error_from_answer(resp.status_code, resp.text or resp.reason_phrase)


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


def wait_params(view: str, wait_s: float, state: TaskState | None) -> dict[str, Any]:
    """Query parameters of a task read, a long-poll when ``wait_s`` > 0."""
    params: dict[str, Any] = {"view": view}
    if wait_s > 0:
        params["wait_s"] = round(wait_s, 3)
        if state is not None:
            params["state"] = state.value
    return params


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

    @property
    def state(self) -> TaskState | None:
        """The last state seen: a long-poll answers once the task leaves it."""
        return None if self.last is None else self.last[0]

    def wait_s(self, poll_s: float) -> float:
        """How long the next long-poll may wait: a poll period, never past the deadline."""
        if self.deadline is None:
            return poll_s
        return max(0.0, min(poll_s, self.deadline - time.monotonic()))

    @staticmethod
    def pause(poll_s: float, began: float) -> float:
        """What is left of the poll period after an answer: none after a long-poll that
        waited it out; the rest after an early answer (a change, or a node that does not
        long-poll), so a waiter never asks more often than every ``poll_s``."""
        return max(0.0, poll_s - (time.monotonic() - began))

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

    def get(
        self, task_id: str, view: str = "FULL", wait_s: float = 0, state: TaskState | None = None
    ) -> TaskOut:
        """One task; with ``wait_s``, once its state is not ``state`` (or it is final)."""
        params = wait_params(view, wait_s, state)
        return TaskOut.model_validate(
            self._request("GET", f"/api/v1/tasks/{task_id}", params=params)
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
            began = time.monotonic()
            task = self.get(task_id, "BASIC", waiter.wait_s(poll_s), waiter.state)
            if waiter.done(task):
                return task
            time.sleep(waiter.pause(poll_s, began))

    def pools(self) -> list[PoolOut]:
        """Every pool the node knows."""
        return [PoolOut.model_validate(p) for p in self._request("GET", "/api/v1/pools")]

    def offers(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Ranked offers for a task template given as ``/api/v1/offers`` query parameters."""
        out: list[dict[str, Any]] = self._request("GET", "/api/v1/offers", params=params)
        return out

    def explain(self, task_id: str) -> dict[str, Any]:
        """Why a task waits, or why its pool won."""
        out: dict[str, Any] = self._request("GET", f"/api/v1/tasks/{task_id}/explain")
        return out

    def add_dataset(
        self, name: str, size_bytes: int, regions: list[str], description: str = ""
    ) -> dict[str, Any]:
        """Register (or update) a dataset and where its replicas are."""
        body = {"name": name, "size_bytes": size_bytes, "regions": regions}
        body["description"] = description
        out: dict[str, Any] = self._request("POST", "/api/v1/datasets", json=body)
        return out

    def datasets(self, name: str | None = None) -> list[dict[str, Any]]:
        """Registered datasets, or the one named."""
        if name is not None:
            return [self._request("GET", f"/api/v1/datasets/{name}")]
        out: list[dict[str, Any]] = self._request("GET", "/api/v1/datasets")
        return out

    def shares(self) -> list[dict[str, Any]]:
        """Tenants' fair-share weights, quotas and held cards (operators: all; else yours)."""
        out: list[dict[str, Any]] = self._request("GET", "/api/v1/shares")
        return out

    def set_share(
        self, tenant: str, weight: float, quota_cards: float | None = None
    ) -> dict[str, Any]:
        """Set a tenant's fair-share weight and quota in cards (operators)."""
        body = {"weight": weight, "quota_cards": quota_cards}
        out: dict[str, Any] = self._request("PUT", f"/api/v1/shares/{tenant}", json=body)
        return out

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

    def audit(self, after_id: int = 0, limit: int = 100, **filters: str) -> dict[str, Any]:
        """A page of the audit log (operators): ``{"events": [...], "next_after_id": ...}``.

        ``filters``: ``since``/``until`` (ISO 8601), ``actor`` (``kind:subject``),
        ``path_prefix``.
        """
        params: dict[str, Any] = {"after_id": after_id, "limit": limit, **filters}
        out: dict[str, Any] = self._request("GET", "/api/v1/audit", params=params)
        return out

    def mint_token(self, role: str, subject: str, **fields: Any) -> dict[str, Any]:
        """Mint a token (operators); ``fields``: tenant, scopes, ttl_s, name. The answer's
        ``token`` is the secret, shown this once."""
        body = {"role": role, "subject": subject, **fields}
        out: dict[str, Any] = self._request("POST", "/api/v1/tokens", json=body)
        return out

    def tokens(self) -> list[dict[str, Any]]:
        """Every API and gateway token's record (operators), without secrets."""
        out: list[dict[str, Any]] = self._request("GET", "/api/v1/tokens")
        return out

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token: your own, or any as an operator."""
        out: dict[str, Any] = self._request("POST", f"/api/v1/tokens/{token_id}/revoke")
        return out

    def prices(self) -> list[dict[str, Any]]:
        """The price book."""
        out: list[dict[str, Any]] = self._request("GET", "/api/v1/prices")
        return out

    def add_price(self, scope: str, price: str, **fields: Any) -> dict[str, Any]:
        """Add a price book entry (operators); ``fields``: tier, unit, currency,
        effective_from."""
        body = {"scope": scope, "price": price, **fields}
        out: dict[str, Any] = self._request("POST", "/api/v1/prices", json=body)
        return out

    def reserve(
        self, model: str, cards: int, starts_at: datetime, duration_s: int, **fields: Any
    ) -> dict[str, Any]:
        """Reserve ``cards`` of ``model`` for ``duration_s`` from ``starts_at``; ``fields``:
        region (GB/T 2260 prefix), pool. Its cost is held against your budget."""
        body = {
            "model": model,
            "cards": cards,
            "starts_at": starts_at.isoformat(),
            "duration_s": duration_s,
            **fields,
        }
        out: dict[str, Any] = self._request("POST", "/api/v1/reservations", json=body)
        return out

    def reservations(self) -> list[dict[str, Any]]:
        """Your reservations (operators: all), newest first."""
        out: list[dict[str, Any]] = self._request("GET", "/api/v1/reservations")
        return out

    def cancel_reservation(self, reservation_id: str) -> dict[str, Any]:
        """Cancel a reservation: free before its window, charged for the time held after."""
        out: dict[str, Any] = self._request("DELETE", f"/api/v1/reservations/{reservation_id}")
        return out

    def budget(self, tenant: str) -> dict[str, Any]:
        """A tenant's budget and where it stands this month."""
        out: dict[str, Any] = self._request("GET", f"/api/v1/budgets/{tenant}")
        return out

    def set_budget(self, tenant: str, monthly_limit: str, **fields: Any) -> dict[str, Any]:
        """Set a tenant's monthly limit (operators); ``fields``: currency, warn_fraction."""
        body = {"monthly_limit": monthly_limit, **fields}
        out: dict[str, Any] = self._request("PUT", f"/api/v1/budgets/{tenant}", json=body)
        return out

    def statement(self, kind: str, party: str, period: str, fmt: str = "json") -> Any:
        """An invoice (``kind`` "invoices", party a tenant) or earnings statement
        ("earnings", party a provider prefix) for a month ``YYYY-MM``; CSV text for
        ``fmt="csv"``."""
        path = f"/api/v1/{kind}/{party}/{period}"
        if fmt == "csv":
            resp = self._http.get(path, params={"format": "csv"})
            if resp.status_code >= 400:
                self._request("GET", path)  # raises the API's error
            return resp.text
        return self._request("GET", path)

    def put_secret(self, name: str, value: str) -> dict[str, Any]:
        """Store (or replace) one of your secrets; tasks name it in ``secrets``."""
        out: dict[str, Any] = self._request("PUT", f"/api/v1/secrets/{name}", json={"value": value})
        return out

    def secrets(self) -> list[dict[str, Any]]:
        """Your secrets' names (values never come back)."""
        out: list[dict[str, Any]] = self._request("GET", "/api/v1/secrets")
        return out

    def delete_secret(self, name: str) -> None:
        """Forget one of your secrets."""
        resp = self._http.delete(f"/api/v1/secrets/{name}")
        if resp.status_code >= 400:
            self._request("GET", "/api/v1/secrets")  # surfaces auth errors the usual way
            raise NotFound(f"no secret {name!r}")

    def settlement(self, peer: str, period: str, reconcile: bool = True) -> dict[str, Any]:
        """What this node and node ``peer`` owe each other for a month (operators); with
        ``reconcile``, the peer's statement too and every difference."""
        out: dict[str, Any] = self._request(
            "GET", f"/api/v1/settlements/{peer}/{period}", params={"reconcile": reconcile}
        )
        return out

    # ---- services (docs/services.md); requests built in service_calls, shared with async --

    def _call(self, call: service_calls.Call[T]) -> T:
        params = call.params or None
        if call.empty_answer:
            check(self._http.request(call.method, call.path, json=call.json, params=params))
            return call.parse(None)
        return call.parse(self._request(call.method, call.path, json=call.json, params=params))

    def service_deploy(
        self, spec: ServiceSpec | dict[str, Any], base_dir: Path | None = None
    ) -> DeployOut:
        """Deploy a service, or roll it to a new version; ``key`` (first deploy of a
        ``key`` service) is shown only this once. Inputs naming a ``local`` file are read
        relative to ``base_dir`` (default: the current directory) and sent as content."""
        return self._call(service_calls.deploy(spec, base_dir))

    def service_list(self) -> list[ServiceOut]:
        """Your services."""
        return self._call(service_calls.list_all())

    def service_status(self, name: str) -> ServiceOut:
        """A service with its replicas (state, node, gateway, region, price, health)."""
        return self._call(service_calls.status(name))

    def service_scale(
        self, name: str, min: int | None = None, max: int | None = None
    ) -> ServiceOut:
        """Set the replica bounds the autoscaler keeps to."""
        return self._call(service_calls.scale(name, min, max))

    def service_logs(self, name: str, replica: int | None = None) -> ReplicaLogsOut:
        """The logs of one replica task (default: the lowest replica)."""
        return self._call(service_calls.logs(name, replica))

    def service_delete(self, name: str) -> None:
        """Delete a service: its replicas are cancelled."""
        self._call(service_calls.delete(name))

    def service_key_create(self, name: str) -> KeyOut:
        """A new API key for the service (shown only now)."""
        return self._call(service_calls.key_create(name))

    def service_keys(self, name: str) -> list[KeyOut]:
        """The service's keys (ids and dates)."""
        return self._call(service_calls.keys(name))

    def service_key_revoke(self, name: str, key_id: str) -> None:
        """Revoke one of the service's keys."""
        self._call(service_calls.key_revoke(name, key_id))
