"""The gateway's HTTP client for ``/gateway/v1``: typed requests, typed errors."""

from __future__ import annotations

import time
from typing import TypeVar

import httpx
from pydantic import BaseModel

from computenet.errors import Unavailable, error_from_answer
from computenet.model.protocol import (
    DeclarePools,
    DeclareReply,
    EnrolReply,
    EnrolRequest,
    Heartbeat,
    HeartbeatReply,
    LeaseReply,
    LeaseRequest,
    ReleaseReply,
    ReleaseRequest,
    ReportReply,
    TaskReport,
)

R = TypeVar("R", bound=BaseModel)


class NodeClient:
    """Talks to one node on behalf of one gateway."""

    def __init__(self, base_url: str, credential: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(10.0))
        self.credential = credential

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _call(
        self, method: str, path: str, body: BaseModel, reply: type[R], timeout_s: float = 10.0
    ) -> R:
        headers = {"Authorization": f"Bearer {self.credential}"} if self.credential else {}
        try:
            resp = await self._http.request(
                method,
                f"/gateway/v1{path}",
                content=body.model_dump_json(exclude_none=True),
                headers={**headers, "Content-Type": "application/json"},
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"node {self.base_url} unreachable: {exc}") from None
        if resp.status_code >= 400:
            raise error_from_answer(
                resp.status_code, resp.text, f"{method} {path}: {resp.status_code} "
            )
        return reply.model_validate_json(resp.content)

    async def enrol(self, token: str, name: str) -> EnrolReply:
        """Trade an enrolment token for a credential."""
        return await self._call("POST", "/enrol", EnrolRequest(token=token, name=name), EnrolReply)

    async def declare(self, msg: DeclarePools) -> DeclareReply:
        """Declare pools."""
        return await self._call("PUT", "/pools", msg, DeclareReply)

    async def ping(self) -> float | None:
        """Round-trip time to the node in milliseconds (None when it does not answer)."""
        began = time.perf_counter()
        try:
            resp = await self._http.get("/gateway/v1/ping", timeout=5.0)
        except httpx.HTTPError:
            return None
        took_ms = (time.perf_counter() - began) * 1000
        return round(took_ms, 3) if resp.status_code == 200 else None

    async def heartbeat(self, msg: Heartbeat) -> HeartbeatReply:
        """Heartbeat and renew leases."""
        return await self._call("POST", "/heartbeat", msg, HeartbeatReply)

    async def lease(self, msg: LeaseRequest) -> LeaseReply:
        """Long-poll for tasks."""
        return await self._call("POST", "/lease", msg, LeaseReply, timeout_s=msg.wait_s + 10)

    async def release(self, task_id: str, msg: ReleaseRequest) -> ReleaseReply:
        """Hand a leased task back to the node."""
        return await self._call("POST", f"/tasks/{task_id}/release", msg, ReleaseReply)

    async def report(self, task_id: str, msg: TaskReport) -> ReportReply:
        """Report on a leased task."""
        return await self._call("POST", f"/tasks/{task_id}/report", msg, ReportReply)
