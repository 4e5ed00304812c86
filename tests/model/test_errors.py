"""The one mapping from an HTTP error answer to an exception, shared by every client."""

from __future__ import annotations

import json

import pytest

from computenet.errors import (
    BudgetExceeded,
    ComputeNetError,
    Conflict,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unavailable,
    error_from_answer,
)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, InvalidInput),
        (401, Unauthorized),
        (402, BudgetExceeded),
        (404, NotFound),
        (409, Conflict),
        (413, InvalidInput),
        (500, Unavailable),
        (503, Unavailable),
    ],
)
def test_each_status_maps_to_its_error(status: int, kind: type[ComputeNetError]) -> None:
    body = json.dumps({"error": "x", "message": "the reason", "status": status})
    err = error_from_answer(status, body, "POST /lease: ")
    assert type(err) is kind and err.message == "POST /lease: the reason"


def test_a_body_that_is_not_json_keeps_its_start() -> None:
    err = error_from_answer(502, "<html>" + "x" * 500)
    assert isinstance(err, Unavailable) and err.message == ("<html>" + "x" * 500)[:200]
