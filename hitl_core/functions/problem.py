"""HTTP mapping of the error tree: application/problem+json (RFC 9457) with precise details.

Status codes are chosen here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import azure.functions as func
from pydantic import BaseModel

from ..checkpoint.base import InvalidContinuationError
from ..errors import (
    CheckpointTooLargeError,
    ConcurrencyError,
    DelegationRefusedError,
    HitlError,
    InputValidationError,
    NotAuthorizedError,
    RequestAlreadyHandledError,
    RequestClaimedError,
    ResponseValidationError,
    SessionClosedError,
    SessionConflictError,
    SessionNotFoundError,
    StorageUnavailableError,
    UnknownRequestError,
    UnknownWorkflowError,
    VoteAlreadyRecordedError,
)

logger = logging.getLogger("hitl_core.functions")

PROBLEM = "application/problem+json"
JSON = "application/json"


class HttpProblem(Exception):
    """A request-level problem found by the adapter itself (malformed JSON, size, media type)."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def json_value(value: Any) -> Any:
    """``value`` as a JSON value (what a problem's extension members carry), never a Python repr.

    Models and dataclasses become objects, datetimes ISO 8601 strings, tuples and sets arrays,
    enums their value; a non-finite float (not representable in JSON) becomes its name as a
    string, and anything else its ``str()``.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return json_value(value.value)
    if isinstance(value, BaseModel):
        return json_value(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_value(dataclasses.asdict(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(v) for v in value]
    return str(value)


def problem(status: int, title: str, detail: str, *, headers: dict[str, str] | None = None,
            **extra: Any) -> func.HttpResponse:
    """An application/problem+json response: ``detail`` is human text, each extension member a JSON value."""
    body = {"type": f"https://hitl.dev/problems/{title.lower().replace(' ', '-')}", "title": title,
            "status": status, "detail": str(detail), **{k: json_value(v) for k, v in extra.items()}}
    return func.HttpResponse(json.dumps(body, allow_nan=False), status_code=status, mimetype=PROBLEM,
                             headers=headers or {})


def ok(model: BaseModel | dict[str, Any], status: int = 200) -> func.HttpResponse:
    text = model.model_dump_json() if isinstance(model, BaseModel) else json.dumps(model, default=str)
    return func.HttpResponse(text, status_code=status, mimetype=JSON)


def from_error(exc: Exception) -> func.HttpResponse:
    """Translate an exception into its problem response (unknown errors leak nothing)."""
    if isinstance(exc, HttpProblem):
        return problem(exc.status, exc.title, exc.detail, **exc.extra)
    if isinstance(exc, SessionNotFoundError):
        return problem(404, "Session not found", str(exc), session_id=exc.session_id)
    if isinstance(exc, UnknownWorkflowError):
        return problem(404, "Workflow not found", str(exc), known_workflows=exc.known)
    if isinstance(exc, RequestClaimedError):
        return problem(409, "Request claimed", str(exc), call_id=exc.call_id, claimed_by=exc.claimed_by,
                       claimed_until=exc.claimed_until)
    if isinstance(exc, VoteAlreadyRecordedError):
        return problem(409, "Vote already recorded", str(exc), call_id=exc.call_id, vote=exc.vote)
    if isinstance(exc, RequestAlreadyHandledError):
        return problem(409, "Request already handled", str(exc), call_id=exc.call_id, decision=exc.decision)
    if isinstance(exc, UnknownRequestError):
        return problem(409, "Request not pending", str(exc), call_id=exc.call_id, pending_call_ids=exc.pending)
    if isinstance(exc, SessionConflictError):
        return problem(409, "Session conflict", str(exc), session_id=exc.session_id)
    if isinstance(exc, ConcurrencyError):  # another writer won every retry: the caller may try again
        return problem(409, "Session conflict", str(exc), session_id=exc.session_id, headers={"Retry-After": "1"})
    if isinstance(exc, CheckpointTooLargeError):
        return problem(413, "Payload too large", str(exc), session_id=exc.session_id, size=exc.size,
                       limit=exc.limit)
    if isinstance(exc, SessionClosedError):
        return problem(409, "Session closed", str(exc), session_id=exc.session_id, session_status=exc.status)
    if isinstance(exc, ResponseValidationError):
        return problem(422, "Invalid result", str(exc), call_id=exc.call_id, errors=exc.errors)
    if isinstance(exc, InputValidationError):
        return problem(422, "Invalid input", str(exc), errors=exc.errors)
    if isinstance(exc, InvalidContinuationError):
        return problem(400, "Bad request", str(exc))
    if isinstance(exc, DelegationRefusedError):
        if exc.kind == "cycle":
            return problem(409, "Delegation cycle", str(exc), kind=exc.kind)
        return problem(422, "Delegation refused", str(exc), kind=exc.kind)
    if isinstance(exc, NotAuthorizedError):
        return problem(403, "Forbidden", str(exc))
    if isinstance(exc, StorageUnavailableError):
        retry = str(int(exc.retry_after or 1))
        return problem(503, "Service unavailable", "storage is unavailable; retry later",
                       headers={"Retry-After": retry})
    if isinstance(exc, HitlError):
        logger.warning("unmapped error: %s", exc)
        return problem(500, "Internal error", "the request could not be completed")
    logger.exception("unexpected error")
    return problem(500, "Internal error", "the request could not be completed")
