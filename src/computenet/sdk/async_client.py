"""The asynchronous Python SDK client (httpx.AsyncClient), with the same calls as ``Client``.

async with AsyncClient() as c:
    tid = await c.submit({"executors": [{"command": ["echo", "hello"]}]})
    task = await c.wait(tid, progress=True)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from computenet.errors import Unavailable
from computenet.model.api import PoolOut, TaskListOut, TaskOut, UsageOut
from computenet.model.task import TaskSpec, TaskState
from computenet.sdk.client import Waiter, attempt_logs, check, connection, submit_body


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

    async def get(self, task_id: str, view: str = "FULL") -> TaskOut:
        """One task."""
        out = await self._request("GET", f"/api/v1/tasks/{task_id}", params={"view": view})
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
            task = await self.get(task_id, view="BASIC")
            if waiter.done(task):
                return task
            await asyncio.sleep(poll_s)

    async def pools(self) -> list[PoolOut]:
        """Every pool the node knows."""
        return [PoolOut.model_validate(p) for p in await self._request("GET", "/api/v1/pools")]

    async def resolve(self, cpi: str) -> dict[str, Any]:
        """A CPI's resource record."""
        out: dict[str, Any] = await self._request("GET", f"/api/v1/resolve/{cpi}")
        return out
