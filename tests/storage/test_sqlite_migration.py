"""SqliteCheckpointStorage opens a file written by the previous layout (no claim columns, no
participants table, ``user_version`` 0) and migrates it once: claims and histories are indexed."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

from hitl_core.checkpoint import SqliteCheckpointStorage
from hitl_core.checkpoint.base import inbox_order
from hitl_core.checkpoint.models import Decision, PendingRequest, WorkflowCheckpoint
from hitl_core.checkpoint.sqlite import SCHEMA_VERSION
from hitl_core.testing import ManualClock, make_checkpoint, make_request

#: The layout of the previous version, verbatim.
_OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    workflow   TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    doc        TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS requests (
    session_id TEXT NOT NULL,
    call_id    TEXT NOT NULL,
    workflow   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    approvers  TEXT NOT NULL,
    doc        TEXT NOT NULL,
    PRIMARY KEY (session_id, call_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_inbox ON requests(created_at, session_id, call_id);
CREATE INDEX IF NOT EXISTS requests_by_workflow ON requests(workflow, created_at, session_id, call_id);
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


def _claimed(call_id: str, who: str | None, until: dt.datetime | None, **fields: Any) -> PendingRequest:
    request = make_request(call_id, **fields)
    request.claimed_by, request.claimed_until = who, until
    return request


def _write_old_file(path: Path, checkpoints: list[WorkflowCheckpoint]) -> None:
    """Rows exactly as the previous version's ``save`` wrote them."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_OLD_SCHEMA)
    for cp in checkpoints:
        db.execute("INSERT INTO sessions(session_id, workflow, status, version, doc, updated_at, expires_at)"
                   " VALUES (?, ?, ?, 1, ?, ?, NULL)",
                   (cp.session_id, cp.workflow, cp.status, cp.model_dump_json(), cp.updated_at.isoformat()))
        db.executemany("INSERT INTO requests(session_id, call_id, workflow, created_at, approvers, doc)"
                       " VALUES (?, ?, ?, ?, ?, ?)",
                       [(cp.session_id, p.call_id, cp.workflow, inbox_order(p), json.dumps(p.approvers),
                         p.model_dump_json()) for p in cp.pending_requests])
    db.close()


async def test_an_old_file_is_migrated_once_with_claims_and_participants(tmp_path: Path) -> None:
    clock = ManualClock()
    now = dt.datetime.fromtimestamp(clock(), dt.UTC)
    live, gone = now + dt.timedelta(hours=1), now - dt.timedelta(minutes=1)
    t0 = dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    decided = Decision(call_id="x", request_type="t", result={"approved": True}, decided_by="rita", via="api",
                       decided_at=t0, on_behalf_of="amy", votes=[{"voter": "fred", "approve": True}])
    path = tmp_path / "old.db"
    _write_old_file(path, [
        make_checkpoint("s-1", status="completed", metadata={"started_by": "Ann"}, decisions=[decided]),
        make_checkpoint("s-2", metadata={"started_by": "bob"}, requests=[
            _claimed("a", "ann", live, created_at=t0, approvers=["role:r"]),
            _claimed("b", "ann", gone, created_at=t0 + dt.timedelta(seconds=1), approvers=["role:r"]),
            _claimed("c", "bob", live, created_at=t0 + dt.timedelta(seconds=2), approvers=["user:ann"])]),
        make_checkpoint("s-3", metadata={"started_by": "ann"}, requests=[
            _claimed("d", None, None, created_at=t0, approvers=["role:r"])]),
    ])

    storage = SqliteCheckpointStorage(path, clock=clock)
    db = storage._db
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
    assert {"claimed_by", "claimed_until"} <= columns
    assert db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'requests_by_claim'").fetchone()

    async def history(person: str) -> list[str]:
        return [s.session_id for s in (await storage.list_sessions(participant=person)).items]

    assert await history("ann") == ["s-1", "s-3"]
    assert await history("rita") == await history("amy") == await history("fred") == ["s-1"]
    assert await history("bob") == ["s-2"]
    claims = await storage.list_pending_requests(claimed_by="ann")
    assert [(e.session_id, e.request.call_id) for e in claims.items] == [("s-2", "a")]
    assert await storage.count_pending_requests(claimed_by="ann") == 1
    assert await storage.count_pending_requests(claimed_by="bob") == 1
    assert await storage.count_pending_requests() == 4
    # the approver keys of the old file's requests are indexed too (counting by key reads no JSON)
    assert await storage.count_pending_requests(assignee="role:r") == 3
    assert await storage.count_pending_requests(assignees=["role:r", "user:ann"]) == 4
    assert await storage.count_pending_requests(assignee="user:ann") == 1

    # the "claimed by" listing walks the new index on a migrated file too
    sql = "SELECT count(*) FROM requests r WHERE r.claimed_by = ? AND r.claimed_until > ?"
    plan = " | ".join(str(row[-1]) for row in db.execute("EXPLAIN QUERY PLAN " + sql, ("ann", "x")))
    assert "requests_by_claim" in plan, plan

    # saves after the migration maintain both indexes
    stored = await storage.load("s-3")
    assert stored is not None
    taken = make_checkpoint("s-3", metadata={"started_by": "ann"}, requests=[
        _claimed("d", "ann", live, created_at=t0, approvers=["role:r"])])
    await storage.save(taken, expected_version=stored.version)
    assert await storage.count_pending_requests(claimed_by="ann") == 2
    await storage.close()

    # a second open finds the file migrated and changes nothing
    again = SqliteCheckpointStorage(path, clock=clock)
    assert again._db.execute("SELECT count(*) FROM participants").fetchone()[0] == 6  # ann x2, rita, amy, fred, bob
    assert [s.session_id for s in (await again.list_sessions(participant="ann")).items] == ["s-1", "s-3"]
    assert await again.count_pending_requests(claimed_by="ann") == 2
    assert await again.delete("s-1")
    assert [s.session_id for s in (await again.list_sessions(participant="rita")).items] == []
    await again.close()


async def test_a_new_file_starts_at_the_current_version(tmp_path: Path) -> None:
    storage = SqliteCheckpointStorage(tmp_path / "new.db")
    assert storage._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    await storage.close()


async def test_a_save_that_changes_no_index_content_writes_no_index_rows(tmp_path: Path) -> None:
    """An outbox clean-up or a resume's claim leaves the inbox's rows alone (statement counts); a change
    of a request, of who took part, or of the expiry rewrites them."""
    storage = SqliteCheckpointStorage(tmp_path / "s.db")
    statements: list[str] = []
    storage._db.set_trace_callback(statements.append)
    cp = make_checkpoint("s-1", metadata={"started_by": "ann"},
                         requests=[_claimed("a", None, None, approvers=["role:r"])])
    version = await storage.save(cp, expected_version=None)

    def index_writes() -> list[str]:
        return [s for s in statements if s.startswith(("DELETE FROM requests", "DELETE FROM request_keys",
                                                       "DELETE FROM participants", "INSERT INTO requests",
                                                       "INSERT OR IGNORE INTO request_keys",
                                                       "INSERT INTO participants"))]

    assert sorted({s.split("(")[0].strip() for s in index_writes()}) == [
        "INSERT INTO participants", "INSERT INTO requests", "INSERT OR IGNORE INTO request_keys"]  # no deletes
    statements.clear()
    cp.outbox = [{"id": "e-1", "type": "t"}]
    version = await storage.save(cp, expected_version=version)
    cp.outbox = []
    version = await storage.save(cp, expected_version=version)
    assert index_writes() == []
    statements.clear()
    cp.pending_requests[0].approvers = ["role:r", "user:bob"]
    version = await storage.save(cp, expected_version=version)
    assert len([s for s in index_writes() if s.startswith("DELETE")]) == 3
    assert await storage.count_pending_requests(assignee="user:bob") == 1
    statements.clear()
    await storage.save(cp, expected_version=version, ttl_seconds=60)  # the expiry is in request_keys too
    assert len([s for s in index_writes() if s.startswith("DELETE")]) == 3
    await storage.close()
