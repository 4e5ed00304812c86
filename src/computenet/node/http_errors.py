"""Turn every failure into JSON with a reason: never a stack trace, never an HTML page."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from computenet.errors import ComputeNetError, RateLimited

log = logging.getLogger("computenet.node")


def error_body(status: int, reason: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one shape of every error the API returns."""
    return {"error": reason, "message": message, "status": status, **extra}


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def _describe(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    loc = tuple(err.get("loc", ()))
    if kind == "json_invalid":
        return f"malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse body')}"
    if kind == "extra_forbidden":
        return f"unknown field '{_field(loc)}'"
    if kind == "missing":
        return f"missing field '{_field(loc)}'"
    return f"{_field(loc)}: {err.get('msg', 'invalid value')}"


def install(app: FastAPI) -> None:
    """Register the handlers that make every error a JSON body with a reason."""

    @app.exception_handler(ComputeNetError)
    async def _ours(_req: Request, exc: ComputeNetError) -> JSONResponse:
        headers = None
        if isinstance(exc, RateLimited):
            # Whole seconds, rounded up: the header takes no fractions.
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        return JSONResponse(
            error_body(exc.status_code, exc.reason, exc.message),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        messages = [_describe(e) for e in errors[:10]]
        body = error_body(400, "invalid_input", "; ".join(messages), fields=messages)
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {
            400: "invalid_input",  # e.g. a body that is not UTF-8
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
        }.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(exc.status_code, reason, str(exc.detail)), status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _crash(req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return JSONResponse(
            error_body(500, "internal", "internal error; the node's log has the details"),
            status_code=500,
        )


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, also when they arrive chunked."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # No declared length (chunked): read the body up to the limit before the app sees it.
        chunks: list[Message] = []
        seen = 0
        while True:
            msg = await receive()
            chunks.append(msg)
            if msg["type"] != "http.request":
                break
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                await self._refuse(send)
                return
            if not msg.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        import json

        body = json.dumps(
            error_body(413, "too_large", f"request body over {self.max_bytes} bytes")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class StatusWatch:
    """Passes an app's messages on and remembers the status it answered with (500 if it
    failed before answering), for middlewares that record requests."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500

    async def send(self, message: Message) -> None:
        """The ``send`` to hand the app."""
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self._send(message)
