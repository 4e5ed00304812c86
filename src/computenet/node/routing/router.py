"""The service router: ``/services/v1/<name>/<path>`` in every node.

Any method and path pass through unchanged and responses stream back as the replica writes
them. Two tiers (CATS): first a site (this node's gateways, or another node) ranked by the
client's region or measured round trip, the site's compute score and its price; then, inside
this node, a replica by the power of two choices on in-flight requests, healthy ones only. A
node with no healthy replica forwards to the best node that has one, else to its parent.
Idempotent requests that fail before the first response byte are retried elsewhere.
"""

from __future__ import annotations

import hmac
import logging
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, Request, Response, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from computenet.errors import ComputeNetError, NotFound, Unauthorized
from computenet.model import tunnel as tf
from computenet.model.service import Access, ServiceLatency, key_hash
from computenet.node.api.deps import Runtime, User, owner_scope
from computenet.node.auth import Principal
from computenet.node.http_errors import error_body
from computenet.node.routing.forward import FORWARD_HEADER, Forwarded, open_forward, seal_forward
from computenet.node.routing.plane import MetricPlane
from computenet.node.routing.select import rank_sites, two_choices
from computenet.node.routing.tunnels import UpstreamError

log = logging.getLogger("computenet.node.routing")
router = APIRouter(tags=["services"])
PREFIX = "/services/v1/"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
REGION = re.compile(r"^\d{2}(?:\d{2}){0,2}$")
REGION_HEADER = "x-client-region"
ROUTER_HEADER = "x-computenet-router"  # on the router's own answers: "no-replica", ...
REPLICA_HEADER = "x-computenet-replica"  # on answers: the replica task that served it
MAX_ATTEMPTS = 3
_rng = random.Random()
# Headers this node's server sets on every answer itself; a replica's (or a forwarding node's)
# copies would repeat them.
_OWN = frozenset({"date", "server", "x-request-id"})


@dataclass(frozen=True)
class _Target:
    """One place to try: a replica behind one of this node's gateways, or another node."""

    task_id: str | None = None
    gateway_id: str | None = None
    node: str | None = None


def _refuse(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse(
        error_body(status, reason, message), status_code=status, headers={ROUTER_HEADER: reason}
    )


def client_region(request: Request, default: str) -> str:
    """The client's region: ``X-Client-Region``, else ``?origin_region=``, else this node's
    (the client reached this node, so it is nearest)."""
    for value in (request.headers.get(REGION_HEADER), request.query_params.get("origin_region")):
        if value and REGION.fullmatch(value):
            return value
    return default


def check_key(authorization: str | None, placements: list[Any]) -> None:
    """Refuse unless the service is public or the bearer key matches one of its hashes."""
    bindings = [p.binding for p in placements]
    if any(b.access == Access.PUBLIC for b in bindings):
        return
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("this service needs Authorization: Bearer <service key>")
    digest = key_hash(key.strip())
    hashes = {h for b in bindings for h in b.key_hashes}
    # Compare against every hash, each in constant time, so timing tells nothing.
    ok = False
    for h in hashes:
        ok |= hmac.compare_digest(h, digest)
    if not ok:
        raise Unauthorized("invalid service key")


def _targets(
    plane: MetricPlane, name: str, region: str, route: list[str], parent: str | None, hops: int
) -> list[_Target]:
    """Where to try, best first: healthy local replicas of the best sites, other nodes, and
    last the parent, never a node the request already went through."""
    out: list[_Target] = []
    may_forward = hops < plane.settings.max_hops
    for site, _cats, _score in rank_sites(plane.sites(name, region), plane.weights()):
        if site.local:
            healthy = [
                p.task_id
                for p in plane.replicas(name)
                if (p.node_code == plane.node_code or p.gateway_id is not None)
                and plane.healthy(p.task_id)
            ]
            while healthy:
                pick = two_choices(healthy, plane.in_flight, _rng)
                healthy.remove(pick)
                out.append(_Target(task_id=pick, gateway_id=plane.gateway_of(pick)))
        elif site.healthy_replicas > 0 and may_forward and site.code not in route:
            out.append(_Target(node=site.code))
    if may_forward and parent and parent not in route and all(t.node != parent for t in out):
        out.append(_Target(node=parent))
    return out


class ServiceFastPath:
    """``/services/v1/<name>/<path>`` taken before the API's middleware and route table.

    Service requests are the hot path and change no node state: they are not audited, the
    metric plane counts them, and the router checks their size itself, so the generic layers
    (tracing, metrics, audit, body limit, a scan of every API route) would only add CPU to
    each one. Added last, so it runs first (inside Starlette's error handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            name, slash, path = scope["path"][len(PREFIX) :].partition("/")
            if name and slash and scope["method"] in METHODS:
                try:
                    response = await route(name, path, Request(scope, receive))
                except ComputeNetError as exc:  # the API's handlers are not on this path
                    response = _refuse(exc.status_code, exc.reason, exc.message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def route(name: str, path: str, request: Request) -> Response:
    """Pass a request to a replica of service ``name``, streaming its answer back."""
    rt = request.app.state.runtime
    plane: MetricPlane = rt.metric_plane
    limit = plane.settings.max_body_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        return _refuse(413, "too_large", f"service request body over {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _refuse(413, "too_large", f"service request body over {limit} bytes")
    method = request.method
    # The query as the client sent it (building ``request.url`` costs more than the rest).
    query = request.scope.get("query_string", b"").decode("latin-1")
    target_path = "/" + path + (f"?{query}" if query else "")
    ident = rt.federation.ident
    placements = await plane.replicas_async(name)
    fwd: Forwarded | None = None
    try:
        if (signed := request.headers.get(FORWARD_HEADER)) is not None:
            fwd = open_forward(signed, ident, rt.federation.guard, method, target_path, body)
        if placements and not (fwd is not None and fwd.key_checked):
            check_key(request.headers.get("authorization"), placements)
    except ComputeNetError as exc:
        return _refuse(exc.status_code, exc.reason, exc.message)
    region = fwd.region if fwd is not None and fwd.region else client_region(request, plane.region)
    route_nodes = fwd.route if fwd is not None else []
    key_checked = bool(placements) or (fwd is not None and fwd.key_checked)
    targets = _targets(plane, name, region, route_nodes, ident.parent_code, len(route_nodes))
    if not targets:
        if not placements and fwd is None and not await plane.known_async(name):
            return _refuse(404, NotFound.reason, f"no service {name!r} known to this node")
        return _refuse(503, "no-replica", f"no healthy replica of {name!r} reachable from here")
    idempotent = method in SAFE or "idempotency-key" in request.headers
    headers = [
        [k, v]
        for k, v in tf.pass_headers(list(request.headers.items()))
        if k not in (FORWARD_HEADER, "authorization") or (k == "authorization" and not key_checked)
    ]
    last = "no attempt"
    for attempt, target in enumerate(targets[:MAX_ATTEMPTS]):
        if attempt and not idempotent:
            break
        try:
            if target.task_id is not None:
                return await _local(plane, name, target, method, target_path, headers, body)
            assert target.node is not None
            signed = seal_forward(
                ident, target.node, method, target_path, body, route_nodes, region, key_checked
            )
            return await _remote(
                rt, plane, name, target.node, method, target_path, headers, body, signed
            )
        except UpstreamError as exc:
            last = str(exc)
            log.info("service %s: %s failed before its answer: %s", name, target, exc)
    plane.count(name, "failed")
    return _refuse(503, "no-replica", f"service {name!r}: {last}")


async def _local(
    plane: MetricPlane,
    name: str,
    target: _Target,
    method: str,
    path: str,
    headers: list[list[str]],
    body: bytes,
) -> Response:
    assert target.task_id is not None
    conn = plane.tunnels.get(target.gateway_id or "")
    if conn is None:
        raise UpstreamError(f"gateway {target.gateway_id} has no tunnel", before_head=True)
    plane.routed(target.task_id, 1)
    t0 = time.perf_counter()
    try:
        up = await conn.open(target.task_id, method, path, headers, body)
    except BaseException:
        plane.routed(target.task_id, -1)
        raise
    ttfb_ms = (time.perf_counter() - t0) * 1000
    plane.count(name, "ok" if up.status < 500 else "error")
    plane.served[target.task_id] += 1
    whole = up.complete()
    if whole is not None:  # all there already: a plain answer costs less than a stream
        plane.routed(target.task_id, -1)
        plane.observe(target.task_id, ttfb_ms, ttfb_ms)
        resp = Response(whole, status_code=up.status)
        resp.raw_headers = [
            *((k.encode(), v.encode()) for k, v in up.headers if k not in _OWN),
            (b"content-length", b"%d" % len(whole)),
            (REPLICA_HEADER.encode(), target.task_id.encode()),
        ]
        return resp

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for chunk in up.body():
                yield chunk
        except UpstreamError as exc:
            log.info("service %s: replica %s cut off: %s", name, target.task_id, exc)
        finally:
            assert target.task_id is not None
            plane.routed(target.task_id, -1)
            plane.observe(target.task_id, ttfb_ms, (time.perf_counter() - t0) * 1000)

    return _streaming(up.status, [*up.headers, (REPLICA_HEADER, target.task_id)], stream())


async def _remote(
    rt: Any,
    plane: MetricPlane,
    name: str,
    node: str,
    method: str,
    path: str,
    headers: list[list[str]],
    body: bytes,
    signed: str,
) -> Response:
    try:
        url = await plane.node_url(node, rt.federation.url_of)
    except NotFound as exc:
        raise UpstreamError(str(exc), before_head=True) from None
    http = plane.http_client()
    request = http.build_request(
        method,
        f"{url.rstrip('/')}/services/v1/{name}{path}",
        headers=[*[(k, v) for k, v in headers], (FORWARD_HEADER, signed)],
        content=body,
    )
    plane.routed(node, 1)
    t0 = time.perf_counter()
    try:
        resp = await http.send(request, stream=True)
    except httpx.HTTPError as exc:
        plane.routed(node, -1)
        plane.site_failed(node)
        raise UpstreamError(f"node {node} unreachable: {exc}", before_head=True) from None
    if resp.headers.get(ROUTER_HEADER) == "no-replica":
        await resp.aclose()
        plane.routed(node, -1)
        plane.site_failed(node)
        raise UpstreamError(f"node {node} has no healthy replica", before_head=True)
    plane.count(name, "forwarded")
    ttfb_ms = (time.perf_counter() - t0) * 1000

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            log.info("service %s: forward to %s cut off: %s", name, node, exc)
        finally:
            await resp.aclose()
            plane.routed(node, -1)
            plane.observe(node, ttfb_ms, (time.perf_counter() - t0) * 1000)

    return _streaming(resp.status_code, tf.pass_headers(list(resp.headers.multi_items())), stream())


def _streaming(status: int, headers: Any, body: AsyncIterator[bytes]) -> Response:
    resp = StreamingResponse(body, status_code=status)
    # Raw headers keep repeated ones (Set-Cookie) and the replica's own Content-Type.
    resp.raw_headers = [(str(k).encode(), str(v).encode()) for k, v in headers if k not in _OWN]
    return resp


async def _may_read_plane(rt: Any, p: Principal, name: str) -> None:
    """Operators read any service's plane on any node; a tenant only its own services' (a
    service this node does not hold, or another tenant's, is "not found" to them)."""
    scope = owner_scope(p)
    if scope is None:
        return
    if scope.owner is None:
        raise NotFound(f"no service {name!r}")
    await run_in_threadpool(rt.service_controller.get, name, scope.owner)


@router.get("/api/v1/services/{name}/metrics", tags=["services"])
async def metrics(name: str, rt: Runtime, p: User, region: str | None = None) -> dict[str, Any]:
    """The metric plane's view of a service: raw replica metrics (CATS level 0), site scores
    per category (level 1) and overall (level 2), and its load."""
    await _may_read_plane(rt, p, name)
    plane = rt.metric_plane
    where = region if region and REGION.fullmatch(region) else plane.region
    return {
        "service": name,
        "client_region": where,
        "load": plane.service_load(name).model_dump(mode="json"),
        "replicas": [r.model_dump(mode="json") for r in plane.replica_metrics(name)],
        "sites": [s.model_dump(mode="json") for s in plane.site_metrics(name, where)],
    }


@router.get("/api/v1/services/{name}/latency", tags=["services"])
async def latency(name: str, rt: Runtime, p: User) -> ServiceLatency:
    """p50/p95 latency over time of each site of a service and of each replica on this
    node's gateways, as this node's router observed it."""
    await _may_read_plane(rt, p, name)
    plane: MetricPlane = rt.metric_plane
    return plane.latency(name, time.time())


@router.websocket(tf.PATH)
async def tunnel(ws: WebSocket) -> None:
    """A gateway's tunnel (authenticated with its credential, like its other calls)."""
    rt = ws.app.state.runtime
    try:
        gw = rt.auth.check(ws.headers.get("authorization"))
        gw.require("gateway")
    except ComputeNetError as exc:
        await ws.close(code=1008, reason=exc.message[:120])
        return
    await ws.accept()
    said = ws.headers.get(tf.VERSION_HEADER, "1")
    version = min(int(said), tf.VERSION) if said.isdigit() else 1
    await rt.metric_plane.tunnels.serve(gw.subject, ws, version)
