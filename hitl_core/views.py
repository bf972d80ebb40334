"""The JSON shapes of the HTTP API (ARCHITECTURE.md "Shapes"), as pydantic models.

They are the single source for responses and for the OpenAPI document, and they are built only
from a stored checkpoint plus the workflow definition (for response schemas).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RequestStatus = Literal["pending", "answered", "cancelled", "expired", "auto_responded"]
SessionStatusView = Literal["pending", "running", "completed", "failed", "cancelled"]


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestView(_View):
    """One human request, pending or decided."""

    call_id: str
    session_id: str
    workflow: str
    executor_id: str
    request_type: str
    data: dict[str, Any]
    response_schema: dict[str, Any]
    created_at: dt.datetime | None = None
    deadline: dt.datetime | None = None
    #: Who may answer: ``user:<directory id>`` and ``role:<name>`` entries.
    approvers: list[str] = Field(default_factory=list)
    #: The person the request is about (directory id); they may not answer it.
    subject: str | None = None
    #: The approval policy when answers are votes (``quorum``, ``veto``, ``decision_field``).
    approval: dict[str, Any] | None = None
    #: Votes so far: ``{"voter", "approve", "result", "at", "via"}``.
    votes: list[dict[str, Any]] = Field(default_factory=list)
    #: Who claimed the request (is working on it), until when; null when nobody holds a live claim.
    claimed_by: str | None = None
    claimed_until: dt.datetime | None = None
    status: RequestStatus = "pending"
    decide_url: str | None = None


class SessionView(_View):
    session_id: str
    workflow: str
    status: SessionStatusView
    pending_requests: list[RequestView]
    outputs: list[Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    decisions: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None


class InboxPage(_View):
    items: list[RequestView]
    continuation: str | None = None
    #: The people (directory ids) whose requests the caller sees as their out-of-office delegate.
    on_behalf_of: list[str] = Field(default_factory=list)
    #: How many requests match over all pages (asked for with ``count=true``; else null).
    total: int | None = None


class AuditRecordView(_View):
    seq: int
    action: str
    call_id: str | None = None
    actor: str | None = None
    source: str | None = None
    at: dt.datetime
    detail: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str | None = None
    hash: str | None = None


class AuditVerification(_View):
    valid: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None


class AuditView(_View):
    session_id: str
    records: list[AuditRecordView]
    verification: AuditVerification | None = None


class HealthView(_View):
    status: Literal["ok", "degraded"]
    storage: str
    eventing: str


class StartBody(_View):
    """Body of ``POST /api/workflows/{workflow}/sessions``."""

    session_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
    input: Any = None


class ResponseBody(_View):
    """Body of ``POST /api/sessions/{session_id}/responses``."""

    call_id: str = Field(min_length=1, max_length=128)
    result: Any = None
    #: A delegate answering for an approver who delegated to them (their directory id or e-mail);
    #: without it a delegate who is no approver acts for the one delegator who may decide.
    on_behalf_of: str | None = Field(default=None, min_length=1, max_length=256)
