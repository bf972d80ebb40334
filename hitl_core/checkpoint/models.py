"""What a checkpoint is: one document per session.

A session's checkpoint holds everything needed to continue it in another process: executor
and shared state, queued messages, the pending requests (typed, JSON-encoded), the decisions
already taken, the outputs, and the outbox of events still to publish. Storage backends treat
it as one document with a version (etag) and index a few top-level fields for the inbox.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..serialization import plain

SessionStatus = Literal["running", "pending", "completed", "failed", "cancelled"]
FINISHED_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


def utcnow() -> dt.datetime:
    """Timezone-aware now; every stored timestamp is UTC."""
    return dt.datetime.now(dt.UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PendingRequest(_Model):
    """A request waiting for a person; ``request`` is the encoded RequestInfoMessage."""

    call_id: str
    executor_id: str
    request_executor_id: str
    request_type: str
    response_type: str | None = None
    request: Any
    created_at: dt.datetime
    deadline: dt.datetime | None = None
    #: Canonical entries ``user:<person id>`` and ``role:<role>`` (plain strings in older checkpoints are users).
    approvers: list[str] = Field(default_factory=list)
    policy: dict[str, Any] = Field(default_factory=dict)
    #: The person the request is about (an expense's employee), by directory id: never an approver of it.
    subject: str | None = None
    #: True once the service resolved ``approvers`` and ``subject`` through the directory.
    resolved: bool = False
    #: The request's approval policy (``ApprovalPolicy`` as JSON) when answers are collected as votes.
    approval: dict[str, Any] | None = None
    #: Votes so far: ``{"voter", "approve", "result", "at", "via"}``, in the order they were recorded.
    votes: list[dict[str, Any]] = Field(default_factory=list)
    #: Who is working on it (a claim), until when; an expired claim is no claim.
    claimed_by: str | None = None
    claimed_until: dt.datetime | None = None

    def live_claim(self, now: dt.datetime) -> str | None:
        """The claimer, while the claim lasts."""
        return self.claimed_by if self.claimed_by and self.claimed_until and self.claimed_until > now else None


class Decision(_Model):
    """What happened to a request. ``applied`` is False while its continuation is running.

    The request itself is kept so a continuation can be (re)run from the checkpoint alone, and
    so a late duplicate decision can be told exactly what was decided, by whom and when.
    """

    call_id: str
    request_type: str
    result: Any
    decided_by: str | None = None
    #: How the decider acted: ``api``, ``link`` (an e-mailed decision link), ``easyauth``, ``system``...
    via: str | None = None
    decided_at: dt.datetime
    applied: bool = False
    outcome: Literal["answered", "cancelled", "expired", "auto_responded"] = "answered"
    request: Any = None
    executor_id: str | None = None
    request_executor_id: str | None = None
    #: Every vote, when the request resolved under a quorum policy (the deciding one last).
    votes: list[dict[str, Any]] = Field(default_factory=list)
    #: When a delegate decided: the approver they acted for ("ron for amy": decided_by ron).
    on_behalf_of: str | None = None

    def view(self) -> dict[str, Any]:
        """The JSON view given to a caller whose decision came too late."""
        return {
            "call_id": self.call_id,
            "outcome": self.outcome,
            "result": plain(self.result),
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat(),
            **({"on_behalf_of": self.on_behalf_of} if self.on_behalf_of else {}),
            **({"votes": self.votes} if self.votes else {}),
        }


class WorkflowCheckpoint(_Model):
    """The whole persisted state of one workflow session."""

    session_id: str
    workflow: str
    status: SessionStatus = "running"
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)
    superstep: int = 0
    executor_states: dict[str, Any] = Field(default_factory=dict)
    shared_state: dict[str, Any] = Field(default_factory=dict)
    queue: list[Any] = Field(default_factory=list)
    pending_requests: list[PendingRequest] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)
    outputs: list[Any] = Field(default_factory=list)
    outbox: list[dict[str, Any]] = Field(default_factory=list)
    input_fingerprint: str | None = None
    error: str | None = None
    audit_seq: int = 0
    audit_head: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def pending_call_ids(self) -> list[str]:
        return [p.call_id for p in self.pending_requests]

    def find_pending(self, call_id: str) -> PendingRequest | None:
        for pending in self.pending_requests:
            if pending.call_id == call_id:
                return pending
        return None

    def find_decision(self, call_id: str) -> Decision | None:
        for decision in self.decisions:
            if decision.call_id == call_id:
                return decision
        return None


class StoredCheckpoint(_Model):
    """A loaded checkpoint and the version to pass back as ``expected_version`` when saving."""

    checkpoint: WorkflowCheckpoint
    version: str


class PendingRequestEntry(_Model):
    """One row of the reviewer inbox."""

    session_id: str
    workflow: str
    request: PendingRequest


class SessionSummary(_Model):
    session_id: str
    workflow: str
    status: SessionStatus
    updated_at: dt.datetime


class AuditRecord(_Model):
    """One audited act on a session (a decision, a refused attempt, a cancellation...).

    ``prev_hash``/``hash`` chain the records of a session so tampering is detectable.
    """

    session_id: str
    seq: int
    action: str
    call_id: str | None = None
    actor: str | None = None
    source: str | None = None
    at: dt.datetime = Field(default_factory=utcnow)
    detail: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str | None = None
    hash: str | None = None


class Delegation(_Model):
    """A person's approvals handed to another person for a period (out of office).

    While ``starts_at <= now < ends_at`` the delegate may act in the delegator's place; the
    stored record expires at ``ends_at`` (TTL). A person has at most one delegation: setting a
    new one replaces it. Both people are directory ids (lower-case).
    """

    delegator: str
    delegate: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    reason: str = ""
    #: Who set it (the delegator, or an admin) and when.
    set_by: str
    set_at: dt.datetime = Field(default_factory=utcnow)

    def active(self, now: dt.datetime) -> bool:
        return self.starts_at <= now < self.ends_at


class StoredDelegation(_Model):
    """A loaded delegation and the version to pass back as ``expected_version``."""

    delegation: Delegation
    version: str


class Page[T](BaseModel):
    """A page of results and the opaque token that fetches the next one (None at the end)."""

    items: list[T]
    continuation: str | None = None
