"""A storage wrapper that counts operations and bytes (real storage underneath, nothing faked)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from hitl_core import AuditRecord, CheckpointStorage, StoredCheckpoint, WorkflowCheckpoint
from hitl_core.checkpoint.base import encode_document


class CountingStorage:
    def __init__(self, inner: CheckpointStorage) -> None:
        self.inner = inner
        self.ops: Counter[str] = Counter()
        self.bytes_written = 0
        self.saved_statuses: list[str] = []

    async def load(self, session_id: str) -> StoredCheckpoint | None:
        self.ops["load"] += 1
        return await self.inner.load(session_id)

    async def save(self, checkpoint: WorkflowCheckpoint, *, expected_version: str | None,
                   ttl_seconds: int | None = None, audit: Sequence[AuditRecord] = ()) -> str:
        self.ops["save"] += 1
        self.bytes_written += len(encode_document(checkpoint, None).encode())
        self.saved_statuses.append(checkpoint.status)
        return await self.inner.save(checkpoint, expected_version=expected_version, ttl_seconds=ttl_seconds,
                                     audit=audit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
