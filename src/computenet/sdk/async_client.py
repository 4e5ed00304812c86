"""The asynchronous Python SDK client (httpx.AsyncClient), with the same calls as ``Client``.

async with AsyncClient() as c:
    tid = await c.submit({"executors": [{"command": ["echo", "hello"]}]})
    task = await c.wait(tid, progress=True)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from computenet.errors import Unavailable
from computenet.model.api import PoolOut, TaskListOut, TaskOut, UsageOut
from computenet.model.service import ServiceSpec
from computenet.model.service_api import DeployOut, KeyOut, ReplicaLogsOut, ServiceOut
from computenet.model.task import TaskSpec, TaskState
from computenet.sdk import service_calls
from computenet.sdk.client import (
    Waiter,
    attempt_logs,
    check,
    connection,
    submit_body,
    wait_params,
)

T = TypeVar("T")


class AsyncClient:
    """Talks to one node as one user, without blocking the event loop."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.url, headers = connection(url, token)
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout_s)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, retries: int = 0, **kw: Any) -> Any:
        for attempt in range(retries + 1):
            try:
                resp = await self._http.request(method, path, **kw)
                break
            except httpx.HTTPError as exc:
                if attempt == retries:
                    raise Unavailable(f"cannot reach node at {self.url}: {exc}") from None
                await asyncio.sleep(0.5 * 2**attempt)
        check(resp)
        return resp.json()

    async def submit(
        self, spec: TaskSpec | dict[str, Any], idempotency_key: str | None = None
    ) -> str:
        """Submit a task and return its id; retries reuse one idempotency key."""
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        out = await self._request(
            "POST", "/api/v1/tasks", retries=3, json=submit_body(spec), headers=headers
        )
        return str(out["id"])

    async def get(
        self, task_id: str, view: str = "FULL", wait_s: float = 0, state: TaskState | None = None
    ) -> TaskOut:
        """One task; with ``wait_s``, once its state is not ``state`` (or it is final)."""
        params = wait_params(view, wait_s, state)
        out = await self._request("GET", f"/api/v1/tasks/{task_id}", params=params)
        return TaskOut.model_validate(out)

    async def list_tasks(
        self, page_size: int = 100, page_token: str | None = None, view: str = "BASIC"
    ) -> TaskListOut:
        """A page of tasks, newest first."""
        params: dict[str, Any] = {"page_size": page_size, "view": view}
        if page_token:
            params["page_token"] = page_token
        return TaskListOut.model_validate(
            await self._request("GET", "/api/v1/tasks", params=params)
        )

    async def cancel(self, task_id: str) -> TaskState:
        """Cancel a task; returns CANCELED, or CANCELING while its gateway stops it."""
        return TaskState((await self._request("POST", f"/api/v1/tasks/{task_id}/cancel"))["state"])

    async def logs(self, task_id: str, stream: str = "stdout", attempt: int | None = None) -> str:
        """The executors' output of one attempt (the latest by default), concatenated."""
        return attempt_logs(await self.get(task_id), stream, attempt)

    async def usage(self, task_id: str) -> list[UsageOut]:
        """Measured usage of each finished attempt."""
        return (await self.get(task_id)).usage or []

    async def wait(
        self,
        task_id: str,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        on_change: Callable[[TaskOut], None] | None = None,
        progress: bool = False,
    ) -> TaskOut:
        """Poll until the task is final; ``on_change`` sees each new state."""
        waiter = Waiter(task_id, timeout_s, on_change, progress)
        while True:
            began = time.monotonic()
            task = await self.get(task_id, "BASIC", waiter.wait_s(poll_s), waiter.state)
            if waiter.done(task):
                return task
            await asyncio.sleep(waiter.pause(poll_s, began))

    async def pools(self) -> list[PoolOut]:
        """Every pool the node knows."""
        return [PoolOut.model_validate(p) for p in await self._request("GET", "/api/v1/pools")]

    async def resolve(self, cpi: str) -> dict[str, Any]:
        """A CPI's resource record."""
        out: dict[str, Any] = await self._request("GET", f"/api/v1/resolve/{cpi}")
        return out

    # ---- services (docs/services.md); the same requests as Client's (sdk/service_calls.py)

    async def _call(self, call: service_calls.Call[T]) -> T:
        params = call.params or None
        if call.empty_answer:
            resp = await self._http.request(call.method, call.path, json=call.json, params=params)
            check(resp)
            return call.parse(None)
        out = await self._request(call.method, call.path, json=call.json, params=params)
        return call.parse(out)

    async def service_deploy(
        self, spec: ServiceSpec | dict[str, Any], base_dir: Path | None = None
    ) -> DeployOut:
        """Deploy a service, or roll it to a new version; ``key`` is shown only this once.
        Inputs naming a ``local`` file are read relative to ``base_dir`` (default: here)."""
        return await self._call(service_calls.deploy(spec, base_dir))

    async def service_list(self) -> list[ServiceOut]:
        """Your services."""
        return await self._call(service_calls.list_all())

    async def service_status(self, name: str) -> ServiceOut:
        """A service with its replicas (state, node, gateway, region, price, health)."""
        return await self._call(service_calls.status(name))

    async def service_scale(
        self, name: str, min: int | None = None, max: int | None = None
    ) -> ServiceOut:
        """Set the replica bounds the autoscaler keeps to."""
        return await self._call(service_calls.scale(name, min, max))

    async def service_logs(self, name: str, replica: int | None = None) -> ReplicaLogsOut:
        """The logs of one replica task (default: the lowest replica)."""
        return await self._call(service_calls.logs(name, replica))

    async def service_delete(self, name: str) -> None:
        """Delete a service: its replicas are cancelled."""
        await self._call(service_calls.delete(name))

    async def service_key_create(self, name: str) -> KeyOut:
        """A new API key for the service (shown only now)."""
        return await self._call(service_calls.key_create(name))

    async def service_keys(self, name: str) -> list[KeyOut]:
        """The service's keys (ids and dates)."""
        return await self._call(service_calls.keys(name))

    async def service_key_revoke(self, name: str, key_id: str) -> None:
        """Revoke one of the service's keys."""
        await self._call(service_calls.key_revoke(name, key_id))
