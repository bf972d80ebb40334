"""The checkpoint storage protocol and the helpers every backend shares.

The protocol is shaped so that Redis and Cosmos DB can implement it with their native
primitives: a session is one document with a version (an etag in Cosmos, a counter in Redis
and SQLite); ``save`` is a conditional write on that version; finished sessions carry a TTL;
the reviewer inbox is a query over pending requests paged by an opaque continuation token;
audit records are appended in the same write as the checkpoint that caused them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import CheckpointTooLargeError, StorageError
from .models import (
    AuditRecord,
    Delegation,
    Page,
    PendingRequest,
    PendingRequestEntry,
    SessionSummary,
    StoredCheckpoint,
    StoredDelegation,
    WorkflowCheckpoint,
)

DEFAULT_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
#: Most assignee keys one inbox call may filter by (a person's id plus each of their roles).
MAX_INBOX_ASSIGNEES = 50
Clock = Callable[[], float]


@runtime_checkable
class CheckpointStorage(Protocol):
    """Where workflow sessions live between a pause and a resume."""

    async def load(self, session_id: str) -> StoredCheckpoint | None:
        """The session's latest checkpoint and its version, or None if absent or expired."""
        ...

    async def save(
        self,
        checkpoint: WorkflowCheckpoint,
        *,
        expected_version: str | None,
        ttl_seconds: int | None = None,
        audit: Sequence[AuditRecord] = (),
    ) -> str:
        """Write ``checkpoint`` if the stored version is ``expected_version`` (None: must not exist).

        Returns the new version. Raises :class:`ConcurrencyError` on a mismatch and
        :class:`CheckpointTooLargeError` before writing an oversized document. ``audit`` records
        are appended in the same write. ``ttl_seconds`` (None: keep) expires the session.
        """
        ...

    async def delete(self, session_id: str, *, expected_version: str | None = None) -> bool:
        """Remove the session (and its audit trail); False if it was not there."""
        ...

    async def list_sessions(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        participant: str | None = None,
        limit: int = 100,
        continuation: str | None = None,
    ) -> Page[SessionSummary]:
        """Sessions ordered by id, optionally filtered.

        ``participant`` keeps the sessions that person took part in (:func:`participants`: started,
        decided, voted, or acted for someone); every backend indexes it, so a person's history is a
        walk of their own entries, never a scan of every session.
        """
        ...

    async def list_pending_requests(
        self,
        *,
        workflow: str | None = None,
        assignee: str | None = None,
        assignees: Sequence[str] | None = None,
        claimed_by: str | None = None,
        due_before: dt.datetime | None = None,
        limit: int = 50,
        continuation: str | None = None,
    ) -> Page[PendingRequestEntry]:
        """The reviewer inbox: pending requests, the nearest deadline first (none: last), then the oldest
        (:func:`inbox_order`, session id, call id).

        ``assignees`` keeps the requests whose ``approvers`` hold ANY of these keys (e.g. a
        caller's ``user:<id>`` and each ``role:<name>``), each request once however many keys it
        matches; an empty sequence matches nothing. ``assignee`` is the shorthand for one key;
        passing both, or more than :data:`MAX_INBOX_ASSIGNEES` distinct keys, is a ValueError
        (see :func:`inbox_assignees`). ``claimed_by`` keeps the requests that person holds a live
        claim on (``claimed_until`` after the storage's clock; :func:`claim_is_live`);
        ``due_before`` the requests whose deadline is before that instant (none: never). Every filter
        combines with the others, and continuation tokens page the filtered inbox exactly once.
        A page may hold fewer than ``limit`` items and still carry a continuation.
        """
        ...

    async def count_pending_requests(
        self,
        *,
        workflow: str | None = None,
        assignee: str | None = None,
        assignees: Sequence[str] | None = None,
        claimed_by: str | None = None,
        due_before: dt.datetime | None = None,
    ) -> int:
        """How many requests :meth:`list_pending_requests` lists over all its pages with these filters,
        counted by the backend (one query or script), without reading the requests."""
        ...

    async def list_audit(self, session_id: str) -> list[AuditRecord]:
        """The session's audit records in order."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class OutboxClearing(Protocol):
    """A storage that empties published outboxes without reading and rewriting each session.

    Why: once its events are published, a session's outbox is emptied so the sweep will not send
    them again. Through :class:`CheckpointStorage` that is a read, a decode, an encode and a whole
    document rewrite per session; a storage that can edit the document in place does it for many
    sessions in one write. Optional: the service reads and rewrites on storages without it.
    """

    async def clear_outboxes(self, versions: Mapping[str, str]) -> set[str]:
        """Empty the outbox of each session (id -> version) that is still at that version and not
        ``running`` (a continuation holds it; it clears after its own write), in one write. Returns
        the ids it cleared; their version moves on, as after any write."""
        ...


@runtime_checkable
class DelegationStorage(Protocol):
    """Where out-of-office delegations live: one record per delegator, beside the sessions.

    Every checkpoint backend implements it. A record expires at its ``ends_at`` (a TTL on
    backends that have one); an ended record is never returned.
    """

    async def load_delegation(self, delegator: str) -> StoredDelegation | None:
        """The delegator's delegation and its version, or None if absent or ended."""
        ...

    async def save_delegation(self, delegation: Delegation, *, expected_version: str | None) -> str:
        """Write it if the stored version is ``expected_version`` (None: none may exist, ended ones aside).

        Returns the new version; :class:`ConcurrencyError` on a mismatch. Expires at ``ends_at``.
        """
        ...

    async def delete_delegation(self, delegator: str, *, expected_version: str | None = None) -> bool:
        """End it now; False if there was none (``expected_version`` mismatch: ConcurrencyError)."""
        ...

    async def list_delegations(self, *, delegate: str | None = None) -> list[Delegation]:
        """Delegations not yet ended (only those to ``delegate`` when given), ordered by delegator."""
        ...


def encode_document(checkpoint: WorkflowCheckpoint, max_bytes: int | None) -> str:
    """Serialise a checkpoint, refusing (before any write) one that exceeds ``max_bytes``."""
    text = checkpoint.model_dump_json()
    if max_bytes is not None:
        size = len(text.encode("utf-8")) if not text.isascii() else len(text)
        if size > max_bytes:
            raise CheckpointTooLargeError(checkpoint.session_id, size, max_bytes)
    return text


def decode_document(text: str | bytes) -> WorkflowCheckpoint:
    return WorkflowCheckpoint.model_validate_json(text)


def encode_token(values: Sequence[Any]) -> str:
    """An opaque continuation token (URL-safe) carrying the last key seen."""
    raw = json.dumps(list(values), separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str, arity: int) -> list[Any]:
    """Read a continuation token back; a malformed one is a caller error, not a crash."""
    try:
        padded = token + "=" * (-len(token) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError) as exc:
        raise InvalidContinuationError("continuation token is malformed") from exc
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidContinuationError("continuation token is malformed")
    return values


def decode_key_token(token: str, arity: int) -> list[str]:
    """A keyset token (the last key seen): exactly ``arity`` strings, else InvalidContinuationError."""
    values = decode_token(token, arity)
    if not all(isinstance(v, str) for v in values):
        raise InvalidContinuationError("continuation token is malformed")
    return values


class InvalidContinuationError(StorageError, ValueError):
    """A continuation token that this storage did not issue."""


def sort_stamp(moment: dt.datetime) -> str:
    """A fixed-width UTC timestamp whose string order is its time order (for indexes and tokens)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_seconds(moment: dt.datetime) -> float:
    """Seconds since the epoch (a naive value is taken to be UTC, as everywhere in storage)."""
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)).timestamp()


#: Where a request without a deadline sorts: after every request that has one.
NO_DEADLINE = "9999-12-31T23:59:59.999999Z"


def inbox_order(request: PendingRequest) -> str:
    """A request's place in the inbox as one string whose order is the inbox order: the nearest
    deadline first (no deadline: last), then the oldest. Every backend indexes this value (in the
    index slots still named ``created_at`` for stored data's sake), so paging follows it."""
    due = sort_stamp(request.deadline) if request.deadline is not None else NO_DEADLINE
    return due + sort_stamp(request.created_at)


def due_stamp(due_before: dt.datetime) -> str:
    """The :func:`inbox_order` bound below which requests are due before ``due_before``: the order
    key starts with the deadline's stamp, so "due before T" is "order key < stamp(T)" (a request
    without a deadline sorts after every stamp and is never due)."""
    return sort_stamp(due_before)


def claim_is_live(request: PendingRequest, claimed_by: str, now: dt.datetime) -> bool:
    """``claimed_by`` holds a claim on the request that has not run out at ``now``."""
    return request.claimed_by == claimed_by and request.live_claim(now) == claimed_by


def participants(checkpoint: WorkflowCheckpoint) -> list[str]:
    """Who took part in a session, by directory id, each once: who started it, who decided or voted
    (and for whom a delegate acted). A person's history lists exactly the sessions naming them here;
    every backend indexes these values with the session."""
    people: list[str] = []
    started_by = checkpoint.metadata.get("started_by")
    if started_by:
        people.append(str(started_by).lower())
    votes: list[dict[str, Any]] = []
    for decision in checkpoint.decisions:
        people += [p for p in (decision.decided_by, decision.on_behalf_of) if p]
        votes += decision.votes
    for pending in checkpoint.pending_requests:
        votes += pending.votes
    for vote in votes:
        people += [str(vote[k]) for k in ("voter", "by") if vote.get(k)]
    return list(dict.fromkeys(p for p in people if p != "system"))


def inbox_key(entry: PendingRequestEntry) -> tuple[str, str, str]:
    """Inbox order: the nearest deadline first, then the oldest; ties broken by session and call id."""
    return (inbox_order(entry.request), entry.session_id, entry.request.call_id)


def inbox_entries(checkpoint: WorkflowCheckpoint) -> list[PendingRequestEntry]:
    return [
        PendingRequestEntry(session_id=checkpoint.session_id, workflow=checkpoint.workflow, request=p)
        for p in checkpoint.pending_requests
    ]


def inbox_assignees(assignee: str | None, assignees: Sequence[str] | None) -> tuple[str, ...] | None:
    """The assignee keys an inbox call filters by: None (no filter), else distinct keys in given order.

    ``assignee`` is the one-key shorthand of ``assignees``. Raises ValueError when both are given
    or when there are more than :data:`MAX_INBOX_ASSIGNEES` distinct keys, TypeError when
    ``assignees`` is a bare string (a sequence of characters, almost certainly a mistake) or holds
    something other than strings. An empty ``assignees`` gives ``()``: a filter nothing matches.
    """
    if assignee is not None and assignees is not None:
        raise ValueError("list_pending_requests takes assignee= or assignees=, not both")
    if assignee is not None:
        if not isinstance(assignee, str):
            raise TypeError(f"assignee must be a string, got {type(assignee).__name__}")
        return (assignee,)
    if assignees is None:
        return None
    if isinstance(assignees, str | bytes):
        raise TypeError("assignees must be a sequence of strings, not a single string (use assignee=)")
    keys = tuple(dict.fromkeys(assignees))
    if not all(isinstance(k, str) for k in keys):
        raise TypeError("assignees must hold strings only")
    if len(keys) > MAX_INBOX_ASSIGNEES:
        raise ValueError(f"list_pending_requests takes at most {MAX_INBOX_ASSIGNEES} assignee keys, "
                         f"got {len(keys)}")
    return keys


def page_inbox(
    entries: Iterable[PendingRequestEntry],
    *,
    workflow: str | None,
    assignee: str | None = None,
    assignees: Sequence[str] | None = None,
    claimed_by: str | None = None,
    due_before: dt.datetime | None = None,
    now: dt.datetime,
    limit: int,
    continuation: str | None,
) -> Page[PendingRequestEntry]:
    """Filter, order and page inbox entries held in memory (InMemory and File backends)."""
    selected = sorted(
        inbox_matches(entries, workflow=workflow, assignee=assignee, assignees=assignees,
                      claimed_by=claimed_by, due_before=due_before, now=now),
        key=inbox_key,
    )
    after = tuple(decode_key_token(continuation, 3)) if continuation else None
    if after is not None:
        selected = [e for e in selected if inbox_key(e) > after]
    items = selected[: max(limit, 0)]
    token = encode_token(inbox_key(items[-1])) if len(selected) > len(items) and items else None
    return Page[PendingRequestEntry](items=items, continuation=token)


def inbox_matches(
    entries: Iterable[PendingRequestEntry],
    *,
    workflow: str | None,
    assignee: str | None = None,
    assignees: Sequence[str] | None = None,
    claimed_by: str | None = None,
    due_before: dt.datetime | None = None,
    now: dt.datetime,
) -> list[PendingRequestEntry]:
    """The entries an inbox call with these filters selects, unordered (InMemory and File backends,
    for listing and counting alike)."""
    keys = inbox_assignees(assignee, assignees)
    wanted = frozenset(keys) if keys is not None else None
    bound = due_stamp(due_before) if due_before is not None else None
    return [
        e
        for e in entries
        if (workflow is None or e.workflow == workflow)
        and (wanted is None or not wanted.isdisjoint(e.request.approvers))
        and (claimed_by is None or claim_is_live(e.request, claimed_by, now))
        and (bound is None or inbox_order(e.request) < bound)
    ]


class HeldInbox:
    """The inbox of a backend that holds its checkpoints itself (InMemory, File): every filter applied
    by :func:`inbox_matches` to the pending requests :meth:`_held_inbox` returns, on the storage's clock."""

    _clock: Clock

    async def _held_inbox(self) -> list[PendingRequestEntry]:
        """Every live session's pending requests."""
        raise NotImplementedError

    def _held_now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    async def list_pending_requests(self, *, workflow: str | None = None, assignee: str | None = None,
                                    assignees: Sequence[str] | None = None, claimed_by: str | None = None,
                                    due_before: dt.datetime | None = None, limit: int = 50,
                                    continuation: str | None = None) -> Page[PendingRequestEntry]:
        inbox_assignees(assignee, assignees)  # a bad filter fails before the entries are gathered
        return page_inbox(await self._held_inbox(), workflow=workflow, assignee=assignee, assignees=assignees,
                          claimed_by=claimed_by, due_before=due_before, now=self._held_now(), limit=limit,
                          continuation=continuation)

    async def count_pending_requests(self, *, workflow: str | None = None, assignee: str | None = None,
                                     assignees: Sequence[str] | None = None, claimed_by: str | None = None,
                                     due_before: dt.datetime | None = None) -> int:
        inbox_assignees(assignee, assignees)
        return len(inbox_matches(await self._held_inbox(), workflow=workflow, assignee=assignee,
                                 assignees=assignees, claimed_by=claimed_by, due_before=due_before,
                                 now=self._held_now()))


def page_sessions(
    summaries: Iterable[SessionSummary],
    *,
    workflow: str | None,
    status: str | None,
    limit: int,
    continuation: str | None,
) -> Page[SessionSummary]:
    """Filter, order and page session summaries held in memory (a ``participant`` filter is applied
    by the caller, which holds the checkpoints)."""
    after = decode_key_token(continuation, 1)[0] if continuation else None
    selected = sorted(
        (
            s
            for s in summaries
            if (workflow is None or s.workflow == workflow) and (status is None or s.status == status)
        ),
        key=lambda s: s.session_id,
    )
    if after is not None:
        selected = [s for s in selected if s.session_id > after]
    items = selected[: max(limit, 0)]
    token = encode_token([items[-1].session_id]) if len(selected) > len(items) and items else None
    return Page[SessionSummary](items=items, continuation=token)


def expiry(ttl_seconds: int | None, clock: Clock = time.time) -> float | None:
    """Absolute expiry time for a TTL (None or 0: never)."""
    if not ttl_seconds:
        return None
    return clock() + ttl_seconds
