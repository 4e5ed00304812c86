"""Reading the audit log back: ``GET /api/v1/audit`` (operators only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from computenet.node.api.deps import Admin, Runtime
from computenet.node.audit import AuditQuery, as_dict, as_jsonl

router = APIRouter(prefix="/api/v1", tags=["audit"])
MAX_AUDIT_PAGE = 5000
MAX_ROW_ID = 2**63 - 1  # a row id is a signed 64-bit integer in both stores


@router.get("/audit")
def audit_log(
    rt: Runtime,
    _p: Admin,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: Annotated[str | None, Query(max_length=300)] = None,
    path_prefix: Annotated[str | None, Query(max_length=1024)] = None,
    after_id: Annotated[int, Query(ge=0, le=MAX_ROW_ID)] = 0,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 100,
    format: Literal["json", "jsonl"] = "json",
) -> Response:
    """Audit rows oldest first; page with ``after_id`` = the last id seen (``next_after_id``).
    With ``order=desc``, newest first; page with ``before_id`` (``next_before_id``).

    ``format=jsonl`` answers JSON lines, one row per line, for export.
    """
    rt.audit.flush()  # what was just done is in the answer
    newest_first = order == "desc"
    q = AuditQuery(since, until, actor, path_prefix, after_id, limit, newest_first, before_id)
    events = rt.audit.query(q)
    if format == "jsonl":
        return StreamingResponse(as_jsonl(events), media_type="application/x-ndjson")
    last = events[-1].id if len(events) == limit else None
    page: dict[str, object] = {"events": [as_dict(e) for e in events]}
    page["next_before_id" if newest_first else "next_after_id"] = last
    return JSONResponse(page)
