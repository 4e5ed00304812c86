"""Operations endpoints: Prometheus ``/metrics``, ``/readyz``, and the console's files.

``/healthz`` (in app.py) says the process answers; ``/readyz`` says the store answers and
the background loops run, so a load balancer may send traffic.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from computenet.node.api.deps import Runtime

router = APIRouter(include_in_schema=False)
CONSOLE_DIR = Path(str(files("computenet.node") / "console"))


@router.get("/metrics")
async def metrics(rt: Runtime) -> Response:
    """Prometheus text format; unauthenticated like most exporters (bind it privately)."""
    body = await run_in_threadpool(generate_latest, rt.monitor.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz")
async def readyz(rt: Runtime) -> JSONResponse:
    """200 when the store answers and the loops run, else 503 with the reason."""

    def store_ok() -> bool:
        with rt.db.read() as s:
            s.execute(text("SELECT 1"))
        return True

    try:
        await run_in_threadpool(store_ok)
    except Exception as exc:
        return JSONResponse({"status": "not ready", "reason": f"store: {exc}"}, status_code=503)
    if not rt.ready or rt.draining:
        why = "draining" if rt.draining else "starting"
        return JSONResponse({"status": "not ready", "reason": why}, status_code=503)
    return JSONResponse({"status": "ready", "node": rt.node_code})


@router.get("/console")
async def console_root() -> RedirectResponse:
    """The console lives at ``/console/``."""
    return RedirectResponse("/console/")


@router.get("/")
async def root() -> RedirectResponse:
    """A person who opens the node's address in a browser gets the console, not a 404."""
    return RedirectResponse("/console/")


def mount_console(app: FastAPI) -> None:
    """Serve the console's HTML, JavaScript and CSS (package data, no build step)."""
    app.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True), name="console")
