"""The exception tree shared by every part of ComputeNet.

Each error carries a machine-readable ``reason`` and maps to one HTTP status, so the API can
answer with JSON and the CLI with one clear line.
"""

from __future__ import annotations

import json


class ComputeNetError(Exception):
    """Base of every error ComputeNet raises on purpose."""

    status_code = 500
    reason = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ComputeNetError):
    """The caller sent something we refuse: bad syntax, bad values, wrong prefix."""

    status_code = 400
    reason = "invalid_input"


class Unauthorized(ComputeNetError):
    """No credentials, or credentials we do not recognise."""

    status_code = 401
    reason = "unauthorized"


class Forbidden(ComputeNetError):
    """Known caller, but not allowed to do this."""

    status_code = 403
    reason = "forbidden"


class NotFound(ComputeNetError):
    """The named object does not exist (or the caller may not see it)."""

    status_code = 404
    reason = "not_found"


class Conflict(ComputeNetError):
    """The request clashes with current state: a lost lease, a finished task, a reused key."""

    status_code = 409
    reason = "conflict"


class Unavailable(ComputeNetError):
    """A dependency (node, backend, database) cannot be reached right now; retry later."""

    status_code = 503
    reason = "unavailable"


class RateLimited(ComputeNetError):
    """The caller sent more requests than its limit allows; retry after ``retry_after_s``."""

    status_code = 429
    reason = "rate_limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BudgetExceeded(ComputeNetError):
    """The work would take a tenant past its budget; the message has the numbers."""

    status_code = 402
    reason = "budget_exceeded"


_BY_STATUS: dict[int, type[ComputeNetError]] = {
    400: InvalidInput,
    401: Unauthorized,
    402: BudgetExceeded,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,  # too large: the caller must send less
}


def error_for_status(status: int) -> type[ComputeNetError]:
    """The error a client raises for an API answer with this status (``Unavailable`` for
    the rest: retry later)."""
    return _BY_STATUS.get(status, Unavailable)


def error_from_answer(status: int, body: str, context: str = "") -> ComputeNetError:
    """The error an HTTP error answer of any ComputeNet server stands for, carrying the
    server's message (its JSON ``message``, else the start of the body) after ``context``.
    The one mapping every client (SDK, gateway, federation peer) uses."""
    try:
        parsed = json.loads(body)
        message = str(parsed.get("message") or body) if isinstance(parsed, dict) else body
    except ValueError:
        message = body[:200]
    return error_for_status(status)(f"{context}{message}")
