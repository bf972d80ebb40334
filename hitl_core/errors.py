"""The project's one error tree.

Every error hitl raises derives from :class:`HitlError`. Backends translate their SDK errors
into this tree inside the backend; only the Functions adapter turns them into HTTP statuses.
Errors a caller can fix by passing something else also derive from ``ValueError`` (the seed's
troubleshooting table speaks of ``ValueError``), so ``except ValueError`` keeps working::

    HitlError
    ├── WorkflowDefinitionError (ValueError)     build() rejected the graph
    ├── CheckpointingNotConfiguredError (ValueError)
    │                                            checkpoint_id given, no with_checkpointing(...)
    ├── SerializationError (TypeError)           a value cannot be stored as JSON
    ├── WorkflowRunError                         a handler failed or the run could not continue
    │   └── MisroutedRequestError                a RequestInfoMessage reached a plain executor
    ├── UnknownWorkflowError (LookupError)       no workflow registered under that name
    ├── InputValidationError (ValueError)        a start input fails the workflow's input model
    ├── SessionError
    │   ├── SessionNotFoundError (LookupError)   no stored session under that id
    │   ├── SessionConflictError                 same session id started with another input
    │   └── SessionClosedError                   session completed/failed/cancelled
    ├── RequestError (ValueError)
    │   ├── UnknownRequestError                  call_id not pending; lists the pending ones
    │   ├── RequestAlreadyHandledError           call_id already decided; carries the decision
    │   └── ResponseValidationError              result fails the response type; stays pending
    ├── NotAuthorizedError (PermissionError)     caller may not decide this request
    ├── DelegationRefusedError (ValueError)      to oneself, a cycle, an unknown person, a bad period
    └── StorageError
        ├── ConcurrencyError                     expected version did not match (etag)
        ├── CheckpointTooLargeError (ValueError) document would exceed the backend's item limit
        └── StorageUnavailableError              backend down/throttled; retry_after seconds
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def json_text(value: Any) -> str:
    """``value`` as it reads in JSON, for error texts: ``"s-1"``, ``null``, ``{"approved": true}``.

    Messages and problem details name values in JSON, never as Python reprs (``'s-1'``,
    ``None``, ``{'approved': True}``), so a client reads them in the notation it sent them in.
    """
    return json.dumps(value, ensure_ascii=False, default=str)


def _with_json_values(message: str, *values: str | None) -> str:
    """A message built elsewhere with ``{value!r}``: each named value rendered as JSON instead.

    Only the exact repr of a value this error carries (its session id, call id) is replaced,
    so nothing else in the text is touched.
    """
    for value in values:
        if isinstance(value, str) and value and repr(value) != json_text(value):
            message = message.replace(repr(value), json_text(value))
    return message


class HitlError(Exception):
    """Base of every error raised by hitl."""


class WorkflowDefinitionError(HitlError, ValueError):
    """The workflow graph cannot run as built (names both ends of a bad edge)."""


class CheckpointingNotConfiguredError(HitlError, ValueError):
    """A checkpoint_id was given to a workflow built without checkpoint storage."""

    def __init__(self, checkpoint_id: str) -> None:
        super().__init__(
            f"checkpoint_id {json_text(checkpoint_id)} was given but this workflow has no checkpoint storage: "
            "build it with WorkflowBuilder().with_checkpointing(checkpoint_storage=...) "
            "(e.g. SqliteCheckpointStorage('hitl.db')) or pass checkpoint_storage= explicitly"
        )
        self.checkpoint_id = checkpoint_id


class SerializationError(HitlError, TypeError):
    """A value cannot be written to a checkpoint as JSON (raised where the value was produced)."""


class WorkflowRunError(HitlError):
    """A run could not continue: a handler raised, or the graph could not deliver a message."""


class MisroutedRequestError(WorkflowRunError):
    """A RequestInfoMessage reached an executor that cannot handle it."""


class UnknownWorkflowError(HitlError, LookupError):
    """No workflow is registered under this name."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"no workflow {json_text(name)}; known workflows: {json_text(sorted(known))}")
        self.name = name
        self.known = list(known)


class InputValidationError(HitlError, ValueError):
    """A start input does not match the workflow's declared input model."""

    def __init__(self, workflow: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"input for workflow {json_text(workflow)} is invalid: {error_summary(errors)}")
        self.workflow = workflow
        self.errors = errors


def error_summary(errors: Sequence[dict[str, Any]]) -> str:
    """``"draft: String should have at least 1 character; approved: Field required"`` (``<root>``: the value itself)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or '<root>'}: {e.get('msg')}" for e in errors
    )


class SessionError(HitlError):
    """Base for problems with a stored session."""

    def __init__(self, message: str, *, session_id: str) -> None:
        super().__init__(_with_json_values(message, session_id))
        self.session_id = session_id


class SessionNotFoundError(SessionError, LookupError):
    """No session is stored under this id."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no session {json_text(session_id)} is stored", session_id=session_id)


class SessionConflictError(SessionError):
    """The session id exists already and was started with different input."""


class SessionClosedError(SessionError):
    """The session has finished (completed, failed or cancelled) and accepts no more input."""

    def __init__(self, session_id: str, status: str) -> None:
        super().__init__(f"session {json_text(session_id)} is {status} and accepts no more input",
                         session_id=session_id)
        self.status = status


class RequestError(HitlError, ValueError):
    """Base for a decision that cannot be applied to a pending request."""

    def __init__(self, message: str, *, session_id: str | None, call_id: str) -> None:
        super().__init__(_with_json_values(message, session_id, call_id))
        self.session_id = session_id
        self.call_id = call_id


class UnknownRequestError(RequestError):
    """The call_id is not pending in this session; ``pending`` lists those that are."""

    def __init__(self, call_id: str, pending: Sequence[str], *, session_id: str | None = None) -> None:
        listed = json_text(list(pending)) if pending else "none"
        where = f" in session {json_text(session_id)}" if session_id else ""
        super().__init__(
            f"call_id {json_text(call_id)} is not a pending request{where}; pending call_ids: {listed}. "
            "Pass the call_id of the FunctionCallContent you received.",
            session_id=session_id,
            call_id=call_id,
        )
        self.pending = list(pending)


class RequestAlreadyHandledError(RequestError):
    """The request was decided already; ``decision`` is the recorded one."""

    def __init__(self, call_id: str, decision: dict[str, Any], *, session_id: str | None = None) -> None:
        who = decision.get("decided_by")
        when = decision.get("decided_at")
        outcome = decision.get("outcome")
        super().__init__(
            f"request {json_text(call_id)} was already handled"
            f"{f' ({outcome})' if isinstance(outcome, str) and outcome != 'answered' else ''}"
            f" by {json_text(who) if who else 'an unknown caller'} at {json_text(when) if when else 'an unknown time'}"
            f"; recorded result: {json_text(decision.get('result'))}",
            session_id=session_id,
            call_id=call_id,
        )
        self.decision = decision


class VoteAlreadyRecordedError(RequestError):
    """This person already voted on the request; ``vote`` is their first vote (a person votes once)."""

    def __init__(self, call_id: str, vote: dict[str, Any], *, session_id: str | None = None) -> None:
        super().__init__(
            f"{json_text(vote.get('voter'))} already voted on request {json_text(call_id)} at "
            f"{json_text(vote.get('at'))}; a person votes once",
            session_id=session_id,
            call_id=call_id,
        )
        self.vote = vote


class RequestClaimedError(RequestError):
    """Someone else holds a live claim on the request (and its policy lets only the claimer answer)."""

    def __init__(self, call_id: str, claimed_by: str, claimed_until: str, *, session_id: str | None = None) -> None:
        super().__init__(
            f"request {json_text(call_id)} is claimed by {json_text(claimed_by)} until {json_text(claimed_until)}",
            session_id=session_id,
            call_id=call_id,
        )
        self.claimed_by = claimed_by
        self.claimed_until = claimed_until


class VoteRecorded(HitlError):
    """A vote was stored and the request is still pending (its policy needs more votes)."""


class ResponseValidationError(RequestError):
    """The result does not validate against the response type; the request stays pending."""

    def __init__(
        self, call_id: str, response_type: str, errors: list[dict[str, Any]], *, session_id: str | None = None
    ) -> None:
        super().__init__(
            f"result for request {json_text(call_id)} does not match {response_type}: {error_summary(errors)}",
            session_id=session_id,
            call_id=call_id,
        )
        self.response_type = response_type
        self.errors = errors


class NotAuthorizedError(HitlError, PermissionError):
    """The caller may not decide this request."""


class DelegationRefusedError(HitlError, ValueError):
    """A delegation that cannot be set: ``kind`` is ``self``, ``cycle``, ``unknown_person`` or ``period``."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class StorageError(HitlError):
    """Base for checkpoint storage failures (SDK errors are translated to these)."""


class ConcurrencyError(StorageError):
    """Another writer changed the session first (expected version/etag did not match)."""

    def __init__(self, session_id: str, expected: str | None, actual: str | None) -> None:
        super().__init__(
            f"session {json_text(session_id)} changed concurrently: expected version {json_text(expected)}, "
            f"found {json_text(actual)}"
        )
        self.session_id = session_id
        self.expected = expected
        self.actual = actual


class CheckpointTooLargeError(StorageError, ValueError):
    """The checkpoint would exceed the backend's document size limit."""

    def __init__(self, session_id: str, size: int, limit: int) -> None:
        super().__init__(
            f"checkpoint of session {json_text(session_id)} is {size} bytes, over the storage limit of {limit} bytes; "
            "keep large payloads out of workflow state (store a reference instead)"
        )
        self.session_id = session_id
        self.size = size
        self.limit = limit


class StorageUnavailableError(StorageError):
    """The backend is unreachable or throttling; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
