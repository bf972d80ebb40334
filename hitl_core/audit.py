"""Audit records that prove themselves: each record holds the hash of the previous one.

The chain head (last sequence number and hash) lives in the session checkpoint, so a new
record is chained and written in the same conditional write as the state change it describes.
``verify_chain`` recomputes every hash and reports the first broken link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from .checkpoint.models import AuditRecord, WorkflowCheckpoint, utcnow
from .views import AuditVerification


def record_hash(record: AuditRecord) -> str:
    """SHA-256 over the canonical JSON of the record without its own hash."""
    body = record.model_dump(mode="json", exclude={"hash"})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append_record(
    checkpoint: WorkflowCheckpoint,
    action: str,
    *,
    call_id: str | None = None,
    actor: str | None = None,
    source: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditRecord:
    """Chain a new record onto the checkpoint's audit head (caller saves both together)."""
    record = AuditRecord(
        session_id=checkpoint.session_id,
        seq=checkpoint.audit_seq + 1,
        action=action,
        call_id=call_id,
        actor=actor,
        source=source,
        at=utcnow(),
        detail=detail or {},
        prev_hash=checkpoint.audit_head,
    )
    record.hash = record_hash(record)
    checkpoint.audit_seq = record.seq
    checkpoint.audit_head = record.hash
    return record


def verify_chain(records: Sequence[AuditRecord]) -> AuditVerification:
    previous: str | None = None
    for index, record in enumerate(records, start=1):
        if record.seq != index:
            return AuditVerification(valid=False, checked=index - 1, first_broken_seq=record.seq,
                                     reason=f"expected sequence {index}, found {record.seq}")
        if record.prev_hash != previous:
            return AuditVerification(valid=False, checked=index - 1, first_broken_seq=record.seq,
                                     reason="prev_hash does not match the previous record")
        if record.hash != record_hash(record):
            return AuditVerification(valid=False, checked=index - 1, first_broken_seq=record.seq,
                                     reason="record content does not match its hash")
        previous = record.hash
    return AuditVerification(valid=True, checked=len(records))
