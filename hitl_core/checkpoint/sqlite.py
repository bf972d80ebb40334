"""SqliteCheckpointStorage: the embedded default (one file, WAL mode).

Why the calls are made on the event loop rather than in a thread: with WAL and
``synchronous=NORMAL`` a commit is a local append without fsync (tens of microseconds), which
is cheaper than the thread hop ``asyncio.to_thread`` costs. Durability: WAL + NORMAL survives
process crashes (the service's failure model: SIGKILL, restarts); only an OS crash or power loss
can lose the last commits. Pass ``synchronous="FULL"`` to fsync every commit. What does cost
milliseconds is copying the WAL back into the file (a *checkpoint*, with its fsyncs), which SQLite
would run inside whichever commit crosses 1,000 pages: :class:`BackgroundWalCheckpoints` runs it on
a worker thread instead.

Tables: ``sessions`` (one row per session: the checkpoint document and its version),
``requests`` (one row per pending request, rewritten with the session in the same
transaction: the inbox index; ``created_at`` holds :func:`inbox_order`, and ``claimed_by`` /
``claimed_until`` (a :func:`sort_stamp`) the request's claim, NULL when unclaimed, indexed by
claimer), ``request_keys`` (one row per approver key of each pending request, with its inbox order,
workflow and the session's expiry, rewritten with the session: counting an inbox by approver keys
walks this primary key and parses no JSON), ``participants`` (one ``(person, session_id)`` row
per :func:`participants` entry, rewritten with the session and removed with it: a person's
history is a walk of their own rows),
``audit`` (append-only, outlives the session's TTL) and ``delegations`` (one row per delegator:
the out-of-office delegation, its version and ``ends_at``, indexed by delegate; an ended row reads
as absent and is removed by :meth:`purge_expired`). Every statement is parameterised.

Schema changes: the tables are created with ``IF NOT EXISTS`` and ``PRAGMA user_version`` records
the layout a file has. Opening a file of an older layout migrates it once, in one ``BEGIN
IMMEDIATE`` transaction (another process opening it at the same time waits, then finds it done):
version 0 to 1 adds the claim columns (filled from the stored request documents), the claim index
and the participants (filled by reading each session document once); 1 to 2 fills ``request_keys``
from the requests' approver lists. Every process writing to a file must run the same version: an
older one would not maintain the claim columns, the approver keys or the participants.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

from ..errors import ConcurrencyError, StorageUnavailableError
from .base import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    Clock,
    decode_document,
    decode_key_token,
    due_stamp,
    encode_document,
    encode_token,
    epoch_seconds,
    expiry,
    inbox_assignees,
    inbox_order,
    participants,
    sort_stamp,
)
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    workflow   TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    doc        TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    expires_at REAL,
    index_digest TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS requests (
    session_id TEXT NOT NULL,
    call_id    TEXT NOT NULL,
    workflow   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    approvers  TEXT NOT NULL,
    doc        TEXT NOT NULL,
    claimed_by    TEXT,
    claimed_until TEXT,
    PRIMARY KEY (session_id, call_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_inbox ON requests(created_at, session_id, call_id);
CREATE INDEX IF NOT EXISTS requests_by_workflow ON requests(workflow, created_at, session_id, call_id);
CREATE TABLE IF NOT EXISTS request_keys (
    key        TEXT NOT NULL,
    created_at TEXT NOT NULL,
    session_id TEXT NOT NULL,
    call_id    TEXT NOT NULL,
    workflow   TEXT NOT NULL,
    expires_at REAL,
    PRIMARY KEY (key, created_at, session_id, call_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS request_keys_by_session ON request_keys(session_id);
CREATE TABLE IF NOT EXISTS participants (
    person     TEXT NOT NULL,
    session_id TEXT NOT NULL,
    PRIMARY KEY (person, session_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS participants_by_session ON participants(session_id, person);
CREATE TABLE IF NOT EXISTS audit (
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    doc        TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delegations (
    delegator TEXT PRIMARY KEY,
    delegate  TEXT NOT NULL,
    ends_at   REAL NOT NULL,
    version   INTEGER NOT NULL,
    doc       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delegations_by_delegate ON delegations(delegate, delegator);
"""

#: The layout this module writes, kept in ``PRAGMA user_version`` (0: a file of the first layout).
SCHEMA_VERSION = 3
#: Created by the migration, after the columns it indexes exist (an older file lacks them at open).
_CLAIM_INDEX = (
    "CREATE INDEX IF NOT EXISTS requests_by_claim"
    " ON requests(claimed_by, created_at, session_id, call_id, claimed_until) WHERE claimed_by IS NOT NULL"
)

_PURGE_EVERY = 500
_log = logging.getLogger(__name__)


def _claim_columns(request: PendingRequest) -> tuple[str | None, str | None]:
    """``(claimed_by, claimed_until)`` as stored: both NULL unless the request names a claimer and an end."""
    if request.claimed_by and request.claimed_until is not None:
        return request.claimed_by, sort_stamp(request.claimed_until)
    return None, None


def open_database(path: Path, *, synchronous: Literal["NORMAL", "FULL"], busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit ``BEGIN IMMEDIATE``), WAL journal,
    the given ``synchronous`` and busy timeout; shared by every SQLite storage of the project. Its
    parent folder is created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")  # one of two constants
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    return db


class BackgroundWalCheckpoints:
    """Copies a connection's WAL back into the database file, and starts the WAL afresh, on a worker
    thread: the event loop never runs a checkpoint's copying or fsyncs.

    Why: SQLite checkpoints automatically inside the commit that takes the WAL past 1,000 pages, and
    that commit runs on the event loop. On the project's machine such a checkpoint took 26-34 ms
    (its fsyncs included) every ~180 commits of a 10 KB session, and every request in flight waited
    for it.

    After every ``every_commits`` commits, a worker thread with a connection of its own:

    1. runs a ``PASSIVE`` checkpoint, which copies the WAL back and waits for nobody, so the loop's
       writers go on meanwhile;
    2. if the WAL held ``restart_after_frames`` frames or more, runs a ``RESTART`` checkpoint at once:
       it copies the few frames added meanwhile and leaves the WAL to start again at its next write.
       Copying alone is not enough under steady load: SQLite reuses a WAL only when a writer finds it
       entirely copied back, and frames were always added while step 1 ran, so the WAL grew until the
       automatic checkpoint ran on the loop after all (measured: 13-37 ms every ~1 s). ``RESTART``
       needs the write lock for its milliseconds; meanwhile the storage's writers wait in
       :meth:`writable` (an ``await``: the loop serves everything else) instead of in SQLite's busy
       handler, which would sleep on the loop. The flag is advice, the lock is the guarantee: a
       writer that began just before simply finishes first.

    The automatic checkpoint stays as a safety net at ``safety_net_pages`` (it bounds the WAL if the
    thread cannot keep up). Commits made outside an event loop (start-up, migrations) only count.
    """

    def __init__(self, path: Path, db: sqlite3.Connection, *, every_commits: int = 100,
                 restart_after_frames: int = 8_000, restart_wait_ms: int = 200,
                 safety_net_pages: int = 20_000) -> None:
        db.execute(f"PRAGMA wal_autocheckpoint={int(safety_net_pages)}")  # an int; PRAGMA takes no parameters
        self.path = path
        self.every_commits = every_commits
        self.restart_after_frames = restart_after_frames
        #: how long RESTART waits for another process's writer or a reader still on the old WAL, then
        #: gives up (reported busy; the next one tries again), so the loop's writers never wait longer
        self.restart_wait_ms = restart_wait_ms
        self._commits = 0
        self._running: asyncio.Future[None] | None = None
        #: set by the worker while its RESTART checkpoint runs; writers on the loop wait meanwhile
        self._restarting = False
        self._waiters: list[asyncio.Future[None]] = []
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the worker's connection, against close() from the loop
        #: checkpoints run, WAL restarts among them, and the last one's ``(busy, frames in the WAL, frames copied)``
        self.runs = 0
        self.restarts = 0
        self.last_result: tuple[int, int, int] | None = None
        self.last_thread: int | None = None

    async def writable(self) -> None:
        """Return when the storage may begin a write transaction: at once, unless the worker's
        ``RESTART`` checkpoint is running. :meth:`writing` calls it right before ``BEGIN``.

        Each waiter has a future of its own, resolved straight from the worker's hand-off: on a
        saturated loop every extra callback hop costs a whole round of the ready queue."""
        while self._restarting:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter  # cancelling this caller cancels its own future only

    @asynccontextmanager
    async def writing(self, transaction: AbstractContextManager[sqlite3.Connection],
                      ) -> AsyncIterator[sqlite3.Connection]:
        """``transaction`` (a storage's ``BEGIN IMMEDIATE`` ... ``COMMIT``, not yet entered), begun once
        :meth:`writable` returns, with no ``await`` between: how every async writer of a storage writes."""
        await self.writable()
        with transaction as db:
            yield db

    def committed(self) -> None:
        """Count a commit; start a checkpoint when enough have piled up and none is running."""
        self._commits += 1
        if self._commits < self.every_commits or self._running is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._commits = 0
        running = self._running = loop.run_in_executor(None, self._checkpoint, loop)
        running.add_done_callback(self._finished)

    def _checkpoint(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._connection is None:
                self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._connection.execute(f"PRAGMA busy_timeout={int(self.restart_wait_ms)}")  # an int
            frames = self._run("PASSIVE")
            if frames < self.restart_after_frames:
                return
            self._restarting = True
            try:
                self._run("RESTART")
            finally:
                self._restarting = False
                loop.call_soon_threadsafe(self._open_gate)

    def _run(self, mode: Literal["PASSIVE", "RESTART"]) -> int:
        """One checkpoint on the worker's connection; returns the frames the WAL held."""
        assert self._connection is not None
        busy, frames, copied = self._connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()  # a constant
        self.runs += 1
        self.restarts += mode == "RESTART" and not busy
        self.last_result = (int(busy), int(frames), int(copied))
        self.last_thread = threading.get_ident()
        return int(frames) if not busy else 0

    def _open_gate(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _finished(self, future: asyncio.Future[None]) -> None:
        self._running = None
        if not future.cancelled() and future.exception() is not None:
            # the next one tries again, and the safety net bounds the WAL meanwhile
            _log.warning("background WAL checkpoint of %s failed: %s", self.path, future.exception())

    async def close(self) -> None:
        """Wait for a checkpoint under way, then close the worker's connection."""
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


@contextmanager
def commit_or_roll_back(db: sqlite3.Connection, checkpoints: BackgroundWalCheckpoints) -> Iterator[sqlite3.Connection]:
    """The rest of a transaction the caller began: ``COMMIT`` when the body finishes, ``ROLLBACK`` if it
    raises (a cancellation too); each commit counts towards the next background WAL checkpoint."""
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    checkpoints.committed()


class SqliteCheckpointStorage:
    """Checkpoints in one SQLite file; safe for several processes on one machine."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        max_document_bytes: int | None = DEFAULT_MAX_DOCUMENT_BYTES,
        busy_timeout_ms: int = 10_000,
        clock: Clock = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_document_bytes = max_document_bytes
        self._clock = clock
        self._saves = 0
        self._db = open_database(self.path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
        self.wal_checkpoints = BackgroundWalCheckpoints(self.path, self._db)
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a file of an older layout to :data:`SCHEMA_VERSION` (see the module docstring)."""
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self._transaction(translate_busy=False) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                return  # another process migrated it while this one waited for the lock
            if version < 1:
                self._migrate_to_1(db)
            # 3: sessions.index_digest (NULL: the next save rewrites the session's index rows)
            if "index_digest" not in {row[1] for row in db.execute("PRAGMA table_info(sessions)")}:
                db.execute("ALTER TABLE sessions ADD COLUMN index_digest TEXT")
            # 2: request_keys, the approver keys of every pending request (the inbox's counts)
            db.execute("DELETE FROM request_keys")
            db.execute("INSERT INTO request_keys(key, created_at, session_id, call_id, workflow, expires_at)"
                       " SELECT DISTINCT j.value, r.created_at, r.session_id, r.call_id, r.workflow, s.expires_at"
                       " FROM requests r JOIN sessions s ON s.session_id = r.session_id, json_each(r.approvers) j")
            db.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")  # a constant; PRAGMA takes no parameters

    @staticmethod
    def _migrate_to_1(db: sqlite3.Connection) -> None:
        """Claim columns and their index; the participants of every stored session."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
        for column in ("claimed_by", "claimed_until"):
            if column not in columns:
                db.execute(f"ALTER TABLE requests ADD COLUMN {column} TEXT")  # fixed names
        claims: list[tuple[str | None, str | None, str, str]] = []
        for sid, call_id, doc in db.execute(
            "SELECT session_id, call_id, doc FROM requests WHERE json_extract(doc, '$.claimed_by') IS NOT NULL"
        ).fetchall():
            try:
                claims.append((*_claim_columns(PendingRequest.model_validate_json(doc)), sid, call_id))
            except ValueError:  # unreadable: listing it fails too; it just stays out of "claimed by"
                _log.warning("sqlite migration: request %r of session %r does not decode", call_id, sid)
        db.executemany(
            "UPDATE requests SET claimed_by = ?, claimed_until = ? WHERE session_id = ? AND call_id = ?", claims)
        db.execute(_CLAIM_INDEX)
        rows: list[tuple[str, str]] = []
        for sid, doc in db.execute("SELECT session_id, doc FROM sessions").fetchall():
            try:
                checkpoint = decode_document(doc)
            except ValueError:  # unreadable: load() fails on it too; it just stays out of every history
                _log.warning("sqlite migration: session %r does not decode; no participants indexed", sid)
                continue
            rows += [(person, sid) for person in participants(checkpoint)]
        db.executemany("INSERT OR IGNORE INTO participants(person, session_id) VALUES (?, ?)", rows)

    def _now(self) -> float:
        return self._clock()

    def _now_stamp(self) -> str:
        """The storage's clock as a :func:`sort_stamp`, to compare with ``claimed_until``."""
        return sort_stamp(dt.datetime.fromtimestamp(self._now(), dt.UTC))

    @contextmanager
    def _transaction(self, *, translate_busy: bool = True) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; any exception (a cancellation too) rolls back and propagates.

        IMMEDIATE takes the write lock at BEGIN, so writers on the file queue up for it (for up to
        ``busy_timeout``). With ``translate_busy``, a BEGIN that still finds the file locked is a
        :class:`StorageUnavailableError` (retry later); without it the ``sqlite3.OperationalError``
        propagates as it is.
        """
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not translate_busy:
                raise
            raise StorageUnavailableError(f"sqlite is busy: {exc}", retry_after=1) from exc
        with commit_or_roll_back(db, self.wal_checkpoints):
            yield db

    async def load(self, session_id: str) -> StoredCheckpoint | None:
        row = self._db.execute(
            "SELECT version, doc FROM sessions WHERE session_id = ? AND (expires_at IS NULL OR expires_at > ?)",
            (session_id, self._now()),
        ).fetchone()
        if row is None:
            return None
        return StoredCheckpoint(checkpoint=decode_document(row[1]), version=str(row[0]))

    async def save(
        self,
        checkpoint: WorkflowCheckpoint,
        *,
        expected_version: str | None,
        ttl_seconds: int | None = None,
        audit: Sequence[AuditRecord] = (),
    ) -> str:
        text = encode_document(checkpoint, self.max_document_bytes)
        sid = checkpoint.session_id
        now = self._now()
        expires_at = expiry(ttl_seconds, self._clock)
        requests = [(p, p.model_dump_json()) for p in checkpoint.pending_requests]
        people = participants(checkpoint)
        # what the index rows are made of: a save that changes none of it (an outbox clean-up, a resume's
        # claim) leaves them as they are instead of deleting and inserting the same rows
        digest = hashlib.blake2b(json.dumps([checkpoint.workflow, expires_at, people, [d for _, d in requests]])
                                 .encode(), digest_size=16).hexdigest()
        async with self.wal_checkpoints.writing(self._transaction()) as db:
            fresh = False  # a new session whose id was never stored: it has no index rows to replace
            if expected_version is None:
                fresh = db.execute(
                    "DELETE FROM sessions WHERE session_id = ? AND expires_at IS NOT NULL AND expires_at <= ?",
                    (sid, now)).rowcount == 0
                cur = db.execute(
                    "INSERT OR IGNORE INTO sessions(session_id, workflow, status, version, doc, updated_at, expires_at)"
                    " VALUES (?, ?, ?, 1, ?, ?, ?)",
                    (sid, checkpoint.workflow, checkpoint.status, text, checkpoint.updated_at.isoformat(), expires_at),
                )
                new_version = 1
            else:
                new_version = int(expected_version) + 1 if expected_version.isdigit() else -1
                cur = db.execute(
                    "UPDATE sessions SET workflow = ?, status = ?, version = ?, doc = ?, updated_at = ?, expires_at = ?"
                    " WHERE session_id = ? AND version = ? AND (expires_at IS NULL OR expires_at > ?)",
                    (checkpoint.workflow, checkpoint.status, new_version, text, checkpoint.updated_at.isoformat(),
                     expires_at, sid, new_version - 1, now),
                )
            if cur.rowcount != 1:
                actual = db.execute(
                    "SELECT version FROM sessions WHERE session_id = ? AND (expires_at IS NULL OR expires_at > ?)",
                    (sid, now),
                ).fetchone()
                raise ConcurrencyError(sid, expected_version, str(actual[0]) if actual else None)
            changed = db.execute("UPDATE sessions SET index_digest = ? WHERE session_id = ? AND index_digest IS NOT ?",
                                 (digest, sid, digest)).rowcount == 1
            if changed or expected_version is None:
                self._write_index_rows(db, checkpoint, requests, people, expires_at, replace=not fresh)
            if audit:
                db.executemany(
                    "INSERT INTO audit(session_id, seq, doc) VALUES (?, ?, ?)",
                    [(r.session_id, r.seq, r.model_dump_json()) for r in audit],
                )
        self._saves += 1
        if self._saves % _PURGE_EVERY == 0:
            self.purge_expired()
        return str(new_version)

    async def clear_outboxes(self, versions: Mapping[str, str]) -> set[str]:
        """Empty published outboxes in one transaction, editing each document in place (SQLite's
        ``json_set``): no read, no decode or encode in Python, and no index row changes (the outbox
        is in none). Only sessions still at the given version and not running are touched."""
        wanted = [(sid, int(version)) for sid, version in versions.items() if version.isdigit()]
        if not wanted:
            return set()
        now = self._now()
        cleared: set[str] = set()
        async with self.wal_checkpoints.writing(self._transaction()) as db:
            for sid, version in wanted:
                cur = db.execute(
                    "UPDATE sessions SET doc = json_set(doc, '$.outbox', json('[]')), version = version + 1"
                    " WHERE session_id = ? AND version = ? AND status != 'running'"
                    " AND (expires_at IS NULL OR expires_at > ?)",
                    (sid, version, now))
                if cur.rowcount == 1:
                    cleared.add(sid)
        return cleared

    @staticmethod
    def _write_index_rows(db: sqlite3.Connection, checkpoint: WorkflowCheckpoint,
                          requests: list[tuple[PendingRequest, str]], people: list[str],
                          expires_at: float | None, *, replace: bool) -> None:
        """The session's rows in ``requests``, ``request_keys`` and ``participants`` (``replace``: the
        old ones are deleted first)."""
        sid = checkpoint.session_id
        if replace:
            for table in ("requests", "request_keys", "participants"):
                db.execute(f"DELETE FROM {table} WHERE session_id = ?", (sid,))  # noqa: S608 - fixed names
        if requests:
            db.executemany(
                "INSERT OR IGNORE INTO request_keys(key, created_at, session_id, call_id, workflow, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(key, inbox_order(p), sid, p.call_id, checkpoint.workflow, expires_at)
                 for p, _ in requests for key in p.approvers],
            )
            db.executemany(
                "INSERT INTO requests(session_id, call_id, workflow, created_at, approvers, doc,"
                " claimed_by, claimed_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(sid, p.call_id, checkpoint.workflow, inbox_order(p), json.dumps(p.approvers), doc,
                  *_claim_columns(p)) for p, doc in requests],
            )
        db.executemany("INSERT INTO participants(person, session_id) VALUES (?, ?)",
                       [(person, sid) for person in people])

    def purge_expired(self) -> int:
        """Delete sessions whose TTL has passed (their audit records stay) and ended delegations.

        Returns the number of sessions deleted.
        """
        now = self._now()
        with self._transaction(translate_busy=False) as db:
            expired = [r[0] for r in db.execute(
                "SELECT session_id FROM sessions WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))]
            db.executemany("DELETE FROM requests WHERE session_id = ?", [(s,) for s in expired])
            db.executemany("DELETE FROM request_keys WHERE session_id = ?", [(s,) for s in expired])
            db.executemany("DELETE FROM participants WHERE session_id = ?", [(s,) for s in expired])
            db.executemany("DELETE FROM sessions WHERE session_id = ?", [(s,) for s in expired])
            db.execute("DELETE FROM delegations WHERE ends_at <= ?", (now,))
        return len(expired)

    async def delete(self, session_id: str, *, expected_version: str | None = None) -> bool:
        async with self.wal_checkpoints.writing(self._transaction(translate_busy=False)) as db:
            row = db.execute(
                "SELECT version FROM sessions WHERE session_id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (session_id, self._now()),
            ).fetchone()
            if row is None:
                return False
            if expected_version is not None and str(row[0]) != expected_version:
                raise ConcurrencyError(session_id, expected_version, str(row[0]))
            for table in ("requests", "request_keys", "participants", "audit", "sessions"):
                db.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))  # noqa: S608 - fixed names
        return True

    async def list_sessions(self, *, workflow: str | None = None, status: str | None = None,
                            participant: str | None = None, limit: int = 100,
                            continuation: str | None = None) -> Page[SessionSummary]:
        """A keyset walk by session id: of ``sessions``, or for one ``participant`` of their own
        ``participants`` rows (the primary key), joined to their sessions."""
        after = decode_key_token(continuation, 1)[0] if continuation else ""
        filters = [workflow, workflow, status, status, self._now(), limit + 1]
        if participant is None:
            sql = ("SELECT s.session_id, s.workflow, s.status, s.updated_at FROM sessions s WHERE s.session_id > ?"
                   " AND (? IS NULL OR s.workflow = ?) AND (? IS NULL OR s.status = ?)"
                   " AND (s.expires_at IS NULL OR s.expires_at > ?) ORDER BY s.session_id LIMIT ?")
            params: list[Any] = [after, *filters]
        else:
            sql = ("SELECT s.session_id, s.workflow, s.status, s.updated_at FROM participants p"
                   " JOIN sessions s ON s.session_id = p.session_id WHERE p.person = ? AND p.session_id > ?"
                   " AND (? IS NULL OR s.workflow = ?) AND (? IS NULL OR s.status = ?)"
                   " AND (s.expires_at IS NULL OR s.expires_at > ?) ORDER BY p.session_id LIMIT ?")
            params = [participant, after, *filters]
        rows = self._db.execute(sql, params).fetchall()
        items = [SessionSummary(session_id=r[0], workflow=r[1], status=r[2], updated_at=r[3]) for r in rows[:limit]]
        token = encode_token([items[-1].session_id]) if len(rows) > limit and items else None
        return Page[SessionSummary](items=items, continuation=token)

    def _inbox_filter(self, workflow: str | None, keys: tuple[str, ...] | None, claimed_by: str | None,
                      due_before: dt.datetime | None) -> tuple[str, list[Any]]:
        """The ``FROM ... WHERE`` of an inbox query (live sessions only) and its parameters.

        Only the number of ``?`` depends on the call; every value is a parameter. Each filter is a
        plain comparison on an indexed column, so that the planner can walk ``requests_by_workflow``
        (one workflow), ``requests_by_claim`` (one claimer) or ``requests_inbox`` (due_before: a
        range of ``created_at``, which holds :func:`inbox_order`).
        """
        sql = (
            " FROM requests r JOIN sessions s ON s.session_id = r.session_id"
            " WHERE (s.expires_at IS NULL OR s.expires_at > ?)"
        )
        params: list[Any] = [self._now()]
        if workflow is not None:
            sql += " AND r.workflow = ?"
            params.append(workflow)
        if claimed_by is not None:
            sql += " AND r.claimed_by = ? AND r.claimed_until > ?"
            params += [claimed_by, self._now_stamp()]
        if due_before is not None:
            sql += " AND r.created_at < ?"
            params.append(due_stamp(due_before))
        if keys is not None:
            marks = ", ".join("?" * len(keys))  # placeholders only: the keys travel as parameters
            sql += f" AND EXISTS (SELECT 1 FROM json_each(r.approvers) WHERE json_each.value IN ({marks}))"  # noqa: S608
            params.extend(keys)
        return sql, params

    async def list_pending_requests(self, *, workflow: str | None = None, assignee: str | None = None,
                                    assignees: Sequence[str] | None = None, claimed_by: str | None = None,
                                    due_before: dt.datetime | None = None, limit: int = 50,
                                    continuation: str | None = None) -> Page[PendingRequestEntry]:
        """One keyset query, walking ``requests_inbox`` (``requests_by_workflow`` for one workflow,
        ``requests_by_claim`` for one claimer) in order.

        The assignee keys filter with ``EXISTS (... json_each(approvers) ... IN (?, ?, ...))``: a
        request matching several keys is still one row, so it is listed once and the keyset stays
        exact. Only the number of ``?`` depends on the call; every value is a parameter.
        """
        keys = inbox_assignees(assignee, assignees)
        after: list[Any] = decode_key_token(continuation, 3) if continuation else ["", "", ""]
        if keys == () or limit <= 0:
            return Page[PendingRequestEntry](items=[], continuation=None)
        where, params = self._inbox_filter(workflow, keys, claimed_by, due_before)
        sql = (
            "SELECT r.session_id, r.workflow, r.doc, r.created_at, r.call_id" + where
            + " AND (r.created_at, r.session_id, r.call_id) > (?, ?, ?)"
            " ORDER BY r.created_at, r.session_id, r.call_id LIMIT ?"
        )
        rows = self._db.execute(sql, [*params, *after, limit + 1]).fetchall()
        items = [
            PendingRequestEntry(session_id=r[0], workflow=r[1], request=PendingRequest.model_validate_json(r[2]))
            for r in rows[:limit]
        ]
        token = None
        if len(rows) > limit and items:
            last = rows[limit - 1]
            token = encode_token([last[3], last[0], last[4]])
        return Page[PendingRequestEntry](items=items, continuation=token)

    async def count_pending_requests(self, *, workflow: str | None = None, assignee: str | None = None,
                                     assignees: Sequence[str] | None = None, claimed_by: str | None = None,
                                     due_before: dt.datetime | None = None) -> int:
        """One ``count(*)`` with the filters of :meth:`list_pending_requests`, on the same indexes;
        no request document is read."""
        keys = inbox_assignees(assignee, assignees)
        if keys == ():
            return 0
        if keys is None or claimed_by is not None:  # the whole inbox, or one person's few claims
            where, params = self._inbox_filter(workflow, keys, claimed_by, due_before)
            return int(self._db.execute("SELECT count(*)" + where, params).fetchone()[0])
        # by approver keys: a walk of request_keys' primary key for each key (no JSON is parsed, no session
        # row is read: the row carries its session's expiry), each request once however many keys it lists
        marks = ", ".join("?" * len(keys))  # placeholders only: the keys travel as parameters
        rows = "DISTINCT k.session_id, k.call_id" if len(keys) > 1 else "1"
        sql = (f"SELECT count(*) FROM (SELECT {rows} FROM request_keys k"  # noqa: S608
               f" WHERE k.key IN ({marks}) AND (k.expires_at IS NULL OR k.expires_at > ?)")
        params = [*keys, self._now()]
        if workflow is not None:
            sql += " AND k.workflow = ?"
            params.append(workflow)
        if due_before is not None:
            sql += " AND k.created_at < ?"
            params.append(due_stamp(due_before))
        return int(self._db.execute(sql + ")", params).fetchone()[0])

    async def list_audit(self, session_id: str) -> list[AuditRecord]:
        rows = self._db.execute("SELECT doc FROM audit WHERE session_id = ? ORDER BY seq", (session_id,)).fetchall()
        return [AuditRecord.model_validate_json(r[0]) for r in rows]

    # -- delegations ----------------------------------------------------------------------------
    async def load_delegation(self, delegator: str) -> StoredDelegation | None:
        row = self._db.execute("SELECT version, doc FROM delegations WHERE delegator = ? AND ends_at > ?",
                               (delegator, self._now())).fetchone()
        if row is None:
            return None
        return StoredDelegation(delegation=Delegation.model_validate_json(row[1]), version=str(row[0]))

    async def save_delegation(self, delegation: Delegation, *, expected_version: str | None) -> str:
        """Compare and write in one ``BEGIN IMMEDIATE`` transaction (writers on the file queue up).

        An ended row counts as absent, but the delegation replacing it continues its version
        counter, so a version handed out for the ended one can never match again.
        """
        delegator = delegation.delegator
        async with self.wal_checkpoints.writing(self._transaction()) as db:
            row = db.execute("SELECT version, ends_at > ? FROM delegations WHERE delegator = ?",
                             (self._now(), delegator)).fetchone()
            actual = str(row[0]) if row is not None and row[1] else None
            if actual != expected_version:
                raise ConcurrencyError(delegator, expected_version, actual)
            version = row[0] + 1 if row is not None else 1
            db.execute(
                "INSERT INTO delegations(delegator, delegate, ends_at, version, doc) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(delegator) DO UPDATE SET delegate = excluded.delegate, ends_at = excluded.ends_at,"
                " version = excluded.version, doc = excluded.doc",
                (delegator, delegation.delegate, epoch_seconds(delegation.ends_at), version,
                 delegation.model_dump_json()),
            )
        return str(version)

    async def delete_delegation(self, delegator: str, *, expected_version: str | None = None) -> bool:
        async with self.wal_checkpoints.writing(self._transaction()) as db:
            row = db.execute("SELECT version FROM delegations WHERE delegator = ? AND ends_at > ?",
                             (delegator, self._now())).fetchone()
            if row is not None and expected_version is not None and str(row[0]) != expected_version:
                raise ConcurrencyError(delegator, expected_version, str(row[0]))
            if row is not None:
                db.execute("DELETE FROM delegations WHERE delegator = ?", (delegator,))
        return row is not None

    async def list_delegations(self, *, delegate: str | None = None) -> list[Delegation]:
        """Live delegations by delegator; for one delegate, a walk of ``delegations_by_delegate``."""
        if delegate is None:
            rows = self._db.execute("SELECT doc FROM delegations WHERE ends_at > ? ORDER BY delegator",
                                    (self._now(),)).fetchall()
        else:
            rows = self._db.execute(
                "SELECT doc FROM delegations WHERE delegate = ? AND ends_at > ? ORDER BY delegator",
                (delegate, self._now())).fetchall()
        return [Delegation.model_validate_json(r[0]) for r in rows]

    async def close(self) -> None:
        await self.wal_checkpoints.close()
        self._db.close()
