"""FileCheckpointStorage: one JSON file per session, for development and small deployments.

A save writes a temporary file, fsyncs it and atomically replaces the session file, so a crash
leaves either the old or the new checkpoint, never a torn one (the folder is fsynced when a
session file is first created). Checkpoints of a *running* session — a resume's claim, or
per-superstep progress — are written without fsync: a power cut can only roll them back to the
previous durable checkpoint, which is always consistent, while every pause, completion, failure
and cancellation is durable.

The version check and the replace happen under an exclusive ``flock`` on one of 64 lock files
(chosen by a hash of the session id), so several processes on one machine can share a folder.
Audit records go to an append-only JSON-lines file per session, written before the checkpoint
that references them. Small reads and writes run directly on the event loop: for documents of a
few kilobytes they cost less than a hop to a worker thread (the same choice as the SQLite
backend); the folder scans of the inbox and listings run in a thread.

The inbox and session listings scan the folder: fine for development, not for 100k sessions —
use SQLite, Redis or Cosmos DB there.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import ConcurrencyError
from .base import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    Clock,
    encode_document,
    expiry,
    inbox_entries,
    page_inbox,
    page_sessions,
)
from .models import AuditRecord, Page, PendingRequestEntry, SessionSummary, StoredCheckpoint, WorkflowCheckpoint


_LOCK_STRIPES = 64
_HEADER = re.compile(rb'\{"version":(\d+),"expires_at":(null|[0-9.eE+\-]+),')


def _file_stem(session_id: str) -> str:
    quoted = quote(session_id, safe="-_")
    if len(quoted) > 180 or quoted.startswith("."):
        return "h_" + hashlib.sha256(session_id.encode("utf-8")).hexdigest()
    return "s_" + quoted


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileCheckpointStorage:
    """Checkpoints as JSON files under ``storage_path``."""

    def __init__(self, storage_path: str | Path, *, fsync: bool = True,
                 max_document_bytes: int | None = DEFAULT_MAX_DOCUMENT_BYTES, clock: Clock = time.time) -> None:
        self.root = Path(storage_path)
        self._sessions = self.root / "sessions"
        self._locks = self.root / "locks"
        self._audit = self.root / "audit"
        for folder in (self._sessions, self._locks, self._audit):
            folder.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._clock = clock
        self.max_document_bytes = max_document_bytes
        self._lock_fds: dict[int, int] = {}

    # -- file helpers ---------------------------------------------------------------------
    def _path(self, session_id: str) -> Path:
        return self._sessions / f"{_file_stem(session_id)}.json"

    @contextmanager
    def _locked(self, session_id: str) -> Iterator[None]:
        """Exclusive across processes; callers never await while holding it."""
        stripe = hashlib.sha256(session_id.encode("utf-8")).digest()[0] % _LOCK_STRIPES
        fd = self._lock_fds.get(stripe)
        if fd is None:
            fd = os.open(self._locks / f"{stripe:02d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_fds[stripe] = fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _current_version(self, path: Path) -> int | None:
        """The stored version, read from the envelope's header (no full parse)."""
        try:
            with open(path, "rb") as fh:
                head = fh.read(96)
        except FileNotFoundError:
            return None
        match = _HEADER.match(head)
        if match is None:
            envelope = self._read(path)
            return None if envelope is None else int(envelope["version"])
        expires_at = match.group(2)
        if expires_at != b"null" and float(expires_at) <= self._clock():
            return None
        return int(match.group(1))

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            envelope: dict[str, Any] = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        expires_at = envelope.get("expires_at")
        if expires_at is not None and expires_at <= self._clock():
            return None
        return envelope

    def _write_atomic(self, path: Path, data: bytes, *, durable: bool, created: bool) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable and created:
            _fsync_dir(path.parent)

    def _save_sync(self, checkpoint: WorkflowCheckpoint, text: str, expected_version: str | None,
                   ttl_seconds: int | None, audit: Sequence[AuditRecord]) -> str:
        sid = checkpoint.session_id
        path = self._path(sid)
        durable = self._fsync and checkpoint.status != "running"
        with self._locked(sid):
            current = self._current_version(path)
            actual = str(current) if current is not None else None
            if actual != expected_version:
                raise ConcurrencyError(sid, expected_version, actual)
            version = (current + 1) if current is not None else 1
            if audit:
                with open(self._audit / f"{_file_stem(sid)}.jsonl", "ab") as fh:
                    fh.write("".join(r.model_dump_json() + "\n" for r in audit).encode("utf-8"))
                    if self._fsync:
                        fh.flush()
                        os.fsync(fh.fileno())
            expires_at = expiry(ttl_seconds, self._clock)
            envelope = (
                f'{{"version":{version},"expires_at":{json.dumps(expires_at)},"checkpoint":{text}}}'
            )
            self._write_atomic(path, envelope.encode("utf-8"), durable=durable, created=current is None)
        return str(version)

    def _load_sync(self, session_id: str) -> StoredCheckpoint | None:
        envelope = self._read(self._path(session_id))
        if envelope is None:
            return None
        return StoredCheckpoint(checkpoint=WorkflowCheckpoint.model_validate(envelope["checkpoint"]),
                                version=str(envelope["version"]))

    def _delete_sync(self, session_id: str, expected_version: str | None) -> bool:
        path = self._path(session_id)
        with self._locked(session_id):
            current = self._read(path)
            if current is None:
                return False
            if expected_version is not None and str(current["version"]) != expected_version:
                raise ConcurrencyError(session_id, expected_version, str(current["version"]))
            path.unlink(missing_ok=True)
            (self._audit / f"{_file_stem(session_id)}.jsonl").unlink(missing_ok=True)
        return True

    def _all(self) -> list[WorkflowCheckpoint]:
        found = []
        for path in self._sessions.glob("*.json"):
            envelope = self._read(path)
            if envelope is not None:
                found.append(WorkflowCheckpoint.model_validate(envelope["checkpoint"]))
        return found

    def _audit_sync(self, session_id: str) -> list[AuditRecord]:
        try:
            lines = (self._audit / f"{_file_stem(session_id)}.jsonl").read_text("utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [AuditRecord.model_validate_json(line) for line in lines if line.strip()]

    # -- the protocol ---------------------------------------------------------------------
    async def load(self, session_id: str) -> StoredCheckpoint | None:
        return self._load_sync(session_id)

    async def save(self, checkpoint: WorkflowCheckpoint, *, expected_version: str | None,
                   ttl_seconds: int | None = None, audit: Sequence[AuditRecord] = ()) -> str:
        text = encode_document(checkpoint, self.max_document_bytes)
        return self._save_sync(checkpoint, text, expected_version, ttl_seconds, audit)

    async def delete(self, session_id: str, *, expected_version: str | None = None) -> bool:
        return self._delete_sync(session_id, expected_version)

    async def list_sessions(self, *, workflow: str | None = None, status: str | None = None,
                            limit: int = 100, continuation: str | None = None) -> Page[SessionSummary]:
        checkpoints = await asyncio.to_thread(self._all)
        summaries = [SessionSummary(session_id=c.session_id, workflow=c.workflow, status=c.status,
                                    updated_at=c.updated_at) for c in checkpoints]
        return page_sessions(summaries, workflow=workflow, status=status, limit=limit, continuation=continuation)

    async def list_pending_requests(self, *, workflow: str | None = None, assignee: str | None = None,
                                    limit: int = 50, continuation: str | None = None) -> Page[PendingRequestEntry]:
        checkpoints = await asyncio.to_thread(self._all)
        entries = [e for c in checkpoints for e in inbox_entries(c)]
        return page_inbox(entries, workflow=workflow, assignee=assignee, limit=limit, continuation=continuation)

    async def list_audit(self, session_id: str) -> list[AuditRecord]:
        return await asyncio.to_thread(self._audit_sync, session_id)

    async def close(self) -> None:
        for fd in self._lock_fds.values():
            os.close(fd)
        self._lock_fds.clear()
