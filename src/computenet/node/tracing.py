"""Request and trace ids, and structured JSON logs that carry them.

A request's id comes from its W3C ``traceparent`` header (the trace id), else from
``X-Request-ID``, else it is generated. It is kept in a context variable for the request's
log lines, echoed in the ``X-Request-ID`` response header, stored with a task at submission
and handed to the gateway in the lease, so one id follows a task from submitter to backend.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

trace_id_var: ContextVar[str | None] = ContextVar("computenet_trace_id", default=None)

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_trace_id() -> str:
    """A fresh 32-hex-digit id, the W3C trace-id shape."""
    return uuid.uuid4().hex


def incoming_trace_id(traceparent: str | None, request_id: str | None) -> str:
    """The id a request carries (``traceparent`` first, then ``X-Request-ID``), or a new one.

    Malformed headers are ignored rather than refused: tracing must never fail a request.
    """
    if traceparent:
        m = _TRACEPARENT.match(traceparent.strip().lower())
        if m and m.group(1) != "0" * 32:
            return m.group(1)
    if request_id and _REQUEST_ID.match(request_id.strip()):
        return request_id.strip()
    return new_trace_id()


class TraceMiddleware:
    """Sets the trace id for each HTTP request and returns it as ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = request_id = None
        for key, value in scope["headers"]:
            if key == b"traceparent":
                parent = value.decode("latin-1")
            elif key == b"x-request-id":
                request_id = value.decode("latin-1")
        tid = incoming_trace_id(parent, request_id)
        token = trace_id_var.set(tid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", tid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            trace_id_var.reset(token)


_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace id and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace = getattr(record, "trace_id", None) or trace_id_var.get()
        if trace:
            out["trace_id"] = trace
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def json_logs_wanted() -> bool:
    """True when ``COMPUTENET_LOG_FORMAT=json`` asks for structured logs."""
    return os.environ.get("COMPUTENET_LOG_FORMAT", "").lower() == "json"


def use_json_logs() -> None:
    """Switch every root handler to the JSON formatter."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())
