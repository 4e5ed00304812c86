"""The node's FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import computenet
from computenet.node import console_cube, http_errors
from computenet.node.api import (
    audit,
    billing,
    console,
    console_fed,
    console_live,
    federation,
    gateway,
    native,
    ops,
    reservations,
    sched,
    secrets,
    tes,
    tokens,
)
from computenet.node.audit import AuditMiddleware
from computenet.node.console_http import ConsoleHeaders
from computenet.node.metrics import MetricsMiddleware
from computenet.node.routing import router as service_routing
from computenet.node.runtime import NodeRuntime
from computenet.node.services import api as services_api
from computenet.node.tracing import TraceMiddleware


def create_app(rt: NodeRuntime) -> FastAPI:
    """Build the ASGI app for a bootstrapped runtime; loops start with the server."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await rt.start()
        console_cube.warm(rt.db, rt.federation.index)
        try:
            yield
        finally:
            await rt.stop()

    app = FastAPI(
        title="ComputeNet node",
        version=computenet.__version__,
        lifespan=lifespan,
        description="Native API, GA4GH TES 1.1 and the gateway protocol of a ComputeNet node.",
    )
    app.state.runtime = rt
    http_errors.install(app)
    app.add_middleware(http_errors.BodyLimit, max_bytes=rt.settings.max_body_bytes)
    app.add_middleware(AuditMiddleware, audit=rt.audit)
    app.include_router(native.router)
    app.include_router(sched.router)
    app.include_router(tes.router)
    app.include_router(gateway.router)
    app.include_router(audit.router)
    app.include_router(tokens.router)
    app.include_router(billing.router)
    app.include_router(reservations.router)
    app.include_router(secrets.router)
    app.include_router(services_api.router)
    app.include_router(federation.router)
    app.include_router(console.router)
    app.include_router(console_fed.router)
    app.include_router(console_live.router)
    app.include_router(ops.router)
    app.include_router(service_routing.router)
    ops.mount_console(app)
    app.add_middleware(ConsoleHeaders)
    app.add_middleware(MetricsMiddleware, metrics=rt.monitor.metrics)
    app.add_middleware(TraceMiddleware)
    app.add_middleware(service_routing.ServiceFastPath)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "node": rt.node_code}

    return app
