"""FileCheckpointStorage: one JSON file per session, for development and small deployments.

Each session has two slot files. A save overwrites, in place, the slot that does *not* hold the
current version, then fsyncs it; every slot carries its version and a CRC-32 of its checkpoint.
A load reads both and takes the newest slot whose checksum holds, so a crash in the middle of a
write leaves the previous checkpoint intact — never a torn one — without creating a new file per
save (creating files is what makes per-save temp files slow). The folder is fsynced when a
session's slot is first created. Checkpoints of a *running* session — a resume's claim, or
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

Delegations (out of office) live in ``delegations/``, one small JSON file per delegator (a
``StoredDelegation``: the delegation and its version), replaced atomically (a temporary file
renamed over it) under the delegator's lock stripe. A file has no TTL: an ended delegation reads
as absent and is kept, so that the next one continues its version counter; listing scans the folder.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from ..errors import ConcurrencyError
from .base import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    Clock,
    HeldInbox,
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

_LOCK_STRIPES = 64
_HEADER = re.compile(rb'\{"version":(\d+),"expires_at":(null|[0-9.eE+\-]+),"length":(\d+),"crc32":(\d+)\}')


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


class FileCheckpointStorage(HeldInbox):
    """Checkpoints as JSON files under ``storage_path``."""

    def __init__(self, storage_path: str | Path, *, fsync: bool = True,
                 max_document_bytes: int | None = DEFAULT_MAX_DOCUMENT_BYTES, clock: Clock = time.time) -> None:
        self.root = Path(storage_path)
        self._sessions = self.root / "sessions"
        self._locks = self.root / "locks"
        self._audit = self.root / "audit"
        self._delegations = self.root / "delegations"
        for folder in (self._sessions, self._locks, self._audit, self._delegations):
            folder.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._clock = clock
        self.max_document_bytes = max_document_bytes
        self._lock_fds: dict[int, int] = {}

    # -- file helpers ---------------------------------------------------------------------
    def _slots(self, session_id: str) -> tuple[Path, Path]:
        stem = _file_stem(session_id)
        return self._sessions / f"{stem}.0.json", self._sessions / f"{stem}.1.json"

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

    @staticmethod
    def _read_slot(path: Path) -> tuple[int, float | None, bytes] | None:
        """(version, expires_at, checkpoint JSON) of a slot whose checksum holds, else None."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        header, _, body = data.partition(b"\n")
        match = _HEADER.fullmatch(header)
        if match is None or len(body) != int(match.group(3)) or zlib.crc32(body) != int(match.group(4)):
            return None  # torn or foreign: the other slot holds the last complete write
        expires = match.group(2)
        return int(match.group(1)), None if expires == b"null" else float(expires), body

    def _current(self, session_id: str) -> tuple[int, bytes] | None:
        """The newest complete, unexpired checkpoint of a session and its version."""
        best: tuple[int, float | None, bytes] | None = None
        for path in self._slots(session_id):
            slot = self._read_slot(path)
            if slot is not None and (best is None or slot[0] > best[0]):
                best = slot
        if best is None or (best[1] is not None and best[1] <= self._clock()):
            return None
        return best[0], best[2]

    def _save_sync(self, checkpoint: WorkflowCheckpoint, text: str, expected_version: str | None,
                   ttl_seconds: int | None, audit: Sequence[AuditRecord]) -> str:
        sid = checkpoint.session_id
        durable = self._fsync and checkpoint.status != "running"
        body = text.encode("utf-8")
        with self._locked(sid):
            current = self._current(sid)
            actual = str(current[0]) if current is not None else None
            if actual != expected_version:
                raise ConcurrencyError(sid, expected_version, actual)
            version = (current[0] + 1) if current is not None else 1
            if audit:
                with open(self._audit / f"{_file_stem(sid)}.jsonl", "ab") as fh:
                    fh.write("".join(r.model_dump_json() + "\n" for r in audit).encode("utf-8"))
                    if self._fsync:
                        fh.flush()
                        os.fsync(fh.fileno())
            expires_at = expiry(ttl_seconds, self._clock)
            header = f'{{"version":{version},"expires_at":{json.dumps(expires_at)},"length":{len(body)},' \
                     f'"crc32":{zlib.crc32(body)}}}\n'
            self._write_slot(self._slots(sid)[version % 2], header.encode("ascii") + body, durable=durable)
        return str(version)

    def _write_slot(self, path: Path, data: bytes, *, durable: bool) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        created = os.fstat(fd).st_size == 0
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if durable and created:
            _fsync_dir(path.parent)

    def _load_sync(self, session_id: str) -> StoredCheckpoint | None:
        current = self._current(session_id)
        if current is None:
            return None
        return StoredCheckpoint(checkpoint=WorkflowCheckpoint.model_validate_json(current[1]),
                                version=str(current[0]))

    def _delete_sync(self, session_id: str, expected_version: str | None) -> bool:
        with self._locked(session_id):
            current = self._current(session_id)
            if current is None:
                return False
            if expected_version is not None and str(current[0]) != expected_version:
                raise ConcurrencyError(session_id, expected_version, str(current[0]))
            for path in self._slots(session_id):
                path.unlink(missing_ok=True)
            (self._audit / f"{_file_stem(session_id)}.jsonl").unlink(missing_ok=True)
        return True

    def _all(self) -> list[WorkflowCheckpoint]:
        newest: dict[str, tuple[int, float | None, bytes]] = {}
        for path in self._sessions.glob("*.json"):
            slot = self._read_slot(path)
            stem = path.name.rsplit(".", 2)[0]
            if slot is not None and (stem not in newest or slot[0] > newest[stem][0]):
                newest[stem] = slot
        now = self._clock()
        return [WorkflowCheckpoint.model_validate_json(body) for _, expires, body in newest.values()
                if expires is None or expires > now]

    def _audit_sync(self, session_id: str) -> list[AuditRecord]:
        try:
            lines = (self._audit / f"{_file_stem(session_id)}.jsonl").read_text("utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [AuditRecord.model_validate_json(line) for line in lines if line.strip()]

    # -- delegations ----------------------------------------------------------------------
    def _delegation_path(self, delegator: str) -> Path:
        return self._delegations / f"{_file_stem(delegator)}.json"

    @staticmethod
    def _read_delegation(path: Path) -> StoredDelegation | None:
        """The stored delegation (ended or not), or None when there is no file."""
        try:
            return StoredDelegation.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None

    def _live_delegation(self, delegator: str) -> StoredDelegation | None:
        stored = self._read_delegation(self._delegation_path(delegator))
        if stored is None or epoch_seconds(stored.delegation.ends_at) <= self._clock():
            return None
        return stored

    def _write_delegation(self, path: Path, stored: StoredDelegation) -> None:
        """Replace the file atomically: write a temporary file, fsync it, rename it over the old one."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, stored.model_dump_json().encode("utf-8"))
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if self._fsync:
            _fsync_dir(path.parent)

    def _save_delegation_sync(self, delegation: Delegation, expected_version: str | None) -> str:
        delegator = delegation.delegator
        path = self._delegation_path(delegator)
        with self._locked(f"delegation:{delegator}"):
            previous = self._read_delegation(path)
            live = previous is not None and epoch_seconds(previous.delegation.ends_at) > self._clock()
            actual = previous.version if previous is not None and live else None
            if actual != expected_version:
                raise ConcurrencyError(delegator, expected_version, actual)
            # an ended file keeps counting, so a version handed out before never matches again
            version = str(int(previous.version) + 1) if previous is not None else "1"
            self._write_delegation(path, StoredDelegation(delegation=delegation, version=version))
        return version

    def _delete_delegation_sync(self, delegator: str, expected_version: str | None) -> bool:
        with self._locked(f"delegation:{delegator}"):
            live = self._live_delegation(delegator)
            if live is None:
                return False
            if expected_version is not None and live.version != expected_version:
                raise ConcurrencyError(delegator, expected_version, live.version)
            self._delegation_path(delegator).unlink(missing_ok=True)
        return True

    def _list_delegations_sync(self, delegate: str | None) -> list[Delegation]:
        now = self._clock()
        found: list[Delegation] = []
        for path in self._delegations.glob("*.json"):
            stored = self._read_delegation(path)
            if stored is None or epoch_seconds(stored.delegation.ends_at) <= now:
                continue
            if delegate is None or stored.delegation.delegate == delegate:
                found.append(stored.delegation)
        return sorted(found, key=lambda d: d.delegator)

    async def load_delegation(self, delegator: str) -> StoredDelegation | None:
        return self._live_delegation(delegator)

    async def save_delegation(self, delegation: Delegation, *, expected_version: str | None) -> str:
        return self._save_delegation_sync(delegation, expected_version)

    async def delete_delegation(self, delegator: str, *, expected_version: str | None = None) -> bool:
        return self._delete_delegation_sync(delegator, expected_version)

    async def list_delegations(self, *, delegate: str | None = None) -> list[Delegation]:
        return await asyncio.to_thread(self._list_delegations_sync, delegate)

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
                            participant: str | None = None, limit: int = 100,
                            continuation: str | None = None) -> Page[SessionSummary]:
        checkpoints = await asyncio.to_thread(self._all)
        summaries = [SessionSummary(session_id=c.session_id, workflow=c.workflow, status=c.status,
                                    updated_at=c.updated_at) for c in checkpoints
                     if participant is None or participant in participants(c)]
        return page_sessions(summaries, workflow=workflow, status=status, limit=limit, continuation=continuation)

    async def _held_inbox(self) -> list[PendingRequestEntry]:
        checkpoints = await asyncio.to_thread(self._all)
        return [e for c in checkpoints for e in inbox_entries(c)]

    async def list_audit(self, session_id: str) -> list[AuditRecord]:
        return await asyncio.to_thread(self._audit_sync, session_id)

    async def close(self) -> None:
        for fd in self._lock_fds.values():
            os.close(fd)
        self._lock_fds.clear()
