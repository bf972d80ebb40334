"""InMemoryCheckpointStorage: for tests and synchronous (Pattern 1) use.

Documents are kept as JSON text, not live objects, so a caller mutating a loaded checkpoint
cannot change what is stored — the same isolation a real database gives.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConcurrencyError
from .base import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    Clock,
    HeldInbox,
    decode_document,
    encode_document,
    epoch_seconds,
    expiry,
    inbox_entries,
    page_sessions,
    participants,
)
from .models import (
    AuditRecord,
    Delegation,
    Page,
    PendingRequestEntry,
    SessionSummary,
    StoredCheckpoint,
    StoredDelegation,
    WorkflowCheckpoint,
)


@dataclass
class _Row:
    version: int
    text: str
    checkpoint: WorkflowCheckpoint
    expires_at: float | None


@dataclass
class _DelegationRow:
    version: int
    text: str  # the StoredDelegation as JSON
    ends_at: float


class InMemoryCheckpointStorage(HeldInbox):
    """A process-local store with the same semantics as the durable ones."""

    def __init__(self, *, max_document_bytes: int | None = DEFAULT_MAX_DOCUMENT_BYTES,
                 clock: Clock = time.time) -> None:
        self._rows: dict[str, _Row] = {}
        self._audit: dict[str, list[str]] = {}
        self._delegations: dict[str, _DelegationRow] = {}
        self._clock = clock
        self.max_document_bytes = max_document_bytes

    def _live(self, session_id: str) -> _Row | None:
        row = self._rows.get(session_id)
        if row is not None and row.expires_at is not None and row.expires_at <= self._clock():
            del self._rows[session_id]  # audit records outlive the session's TTL
            return None
        return row

    async def load(self, session_id: str) -> StoredCheckpoint | None:
        row = self._live(session_id)
        if row is None:
            return None
        return StoredCheckpoint(checkpoint=decode_document(row.text), version=str(row.version))

    async def save(
        self,
        checkpoint: WorkflowCheckpoint,
        *,
        expected_version: str | None,
        ttl_seconds: int | None = None,
        audit: Sequence[AuditRecord] = (),
    ) -> str:
        text = encode_document(checkpoint, self.max_document_bytes)
        row = self._live(checkpoint.session_id)
        actual = str(row.version) if row else None
        if actual != expected_version:
            raise ConcurrencyError(checkpoint.session_id, expected_version, actual)
        version = (row.version + 1) if row else 1
        self._rows[checkpoint.session_id] = _Row(
            version, text, decode_document(text), expiry(ttl_seconds, self._clock)
        )
        if audit:
            self._audit.setdefault(checkpoint.session_id, []).extend(r.model_dump_json() for r in audit)
        return str(version)

    async def delete(self, session_id: str, *, expected_version: str | None = None) -> bool:
        row = self._live(session_id)
        if row is None:
            return False
        if expected_version is not None and str(row.version) != expected_version:
            raise ConcurrencyError(session_id, expected_version, str(row.version))
        del self._rows[session_id]
        self._audit.pop(session_id, None)
        return True

    async def list_sessions(self, *, workflow: str | None = None, status: str | None = None,
                            participant: str | None = None, limit: int = 100,
                            continuation: str | None = None) -> Page[SessionSummary]:
        summaries = [
            SessionSummary(session_id=sid, workflow=r.checkpoint.workflow, status=r.checkpoint.status,
                           updated_at=r.checkpoint.updated_at)
            for sid in list(self._rows)
            if (r := self._live(sid)) is not None
            and (participant is None or participant in participants(r.checkpoint))
        ]
        return page_sessions(summaries, workflow=workflow, status=status, limit=limit, continuation=continuation)

    async def _held_inbox(self) -> list[PendingRequestEntry]:
        return [e for sid in list(self._rows) if (r := self._live(sid)) is not None
                for e in inbox_entries(r.checkpoint)]

    async def list_audit(self, session_id: str) -> list[AuditRecord]:
        return [AuditRecord.model_validate_json(t) for t in self._audit.get(session_id, [])]

    # -- delegations ----------------------------------------------------------------------------
    # One row per delegator. An ended row is kept until replaced (it reads as absent), and the
    # delegation that replaces it continues its version counter, so an old version never matches.
    def _live_delegation(self, delegator: str) -> _DelegationRow | None:
        row = self._delegations.get(delegator)
        return row if row is not None and row.ends_at > self._clock() else None

    async def load_delegation(self, delegator: str) -> StoredDelegation | None:
        row = self._live_delegation(delegator)
        return StoredDelegation.model_validate_json(row.text) if row is not None else None

    async def save_delegation(self, delegation: Delegation, *, expected_version: str | None) -> str:
        delegator = delegation.delegator
        live = self._live_delegation(delegator)
        actual = str(live.version) if live is not None else None
        if actual != expected_version:
            raise ConcurrencyError(delegator, expected_version, actual)
        previous = self._delegations.get(delegator)
        version = previous.version + 1 if previous is not None else 1
        text = StoredDelegation(delegation=delegation, version=str(version)).model_dump_json()
        self._delegations[delegator] = _DelegationRow(version, text, epoch_seconds(delegation.ends_at))
        return str(version)

    async def delete_delegation(self, delegator: str, *, expected_version: str | None = None) -> bool:
        live = self._live_delegation(delegator)
        if live is None:
            return False
        if expected_version is not None and str(live.version) != expected_version:
            raise ConcurrencyError(delegator, expected_version, str(live.version))
        del self._delegations[delegator]
        return True

    async def list_delegations(self, *, delegate: str | None = None) -> list[Delegation]:
        now = self._clock()
        found = [StoredDelegation.model_validate_json(row.text).delegation
                 for _, row in sorted(self._delegations.items()) if row.ends_at > now]
        return [d for d in found if delegate is None or d.delegate == delegate]

    async def close(self) -> None:
        return None
