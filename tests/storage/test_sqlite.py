"""SqliteCheckpointStorage specifics: the inbox is one parameterised keyset query on an index."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from hitl_core.checkpoint import SqliteCheckpointStorage
from hitl_core.testing import make_checkpoint, make_request


class _Recorder:
    """Stands in for the storage's connection and records every statement sent through it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self.calls.append((sql, tuple(params)))
        return self.db.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_multi_key_inbox_is_one_parameterised_query_on_the_inbox_index(tmp_path: Path) -> None:
    storage = SqliteCheckpointStorage(tmp_path / "hitl.db")
    evil = ["x') OR 1=1 --", "role:fin", 'user:"amy"']
    await storage.save(make_checkpoint("s-1", requests=[make_request("c", approvers=["role:fin", "user:amy"])]),
                       expected_version=None)
    await storage.save(make_checkpoint("s-2", requests=[make_request("c", approvers=["role:hr"])]),
                       expected_version=None)
    real = storage._db
    recorder = _Recorder(real)
    storage._db = recorder  # type: ignore[assignment]
    try:
        for workflow, index in ((None, "requests_inbox"), ("wf", "requests_by_workflow")):
            recorder.calls.clear()
            page = await storage.list_pending_requests(assignees=evil, workflow=workflow, limit=10)
            assert [(e.session_id, e.request.call_id) for e in page.items] == [("s-1", "c")]
            [(sql, params)] = recorder.calls
            assert "json_each.value IN (?, ?, ?)" in sql
            assert not any(key in sql for key in evil)
            assert all(key in params for key in evil)
            plan = " | ".join(str(row[-1]) for row in real.execute("EXPLAIN QUERY PLAN " + sql, params))
            assert f"USING INDEX {index} " in plan and "TEMP B-TREE" not in plan, plan  # keyset order from the index
    finally:
        storage._db = real
    await storage.close()


async def test_wal_checkpoints_run_on_a_worker_thread_not_in_the_commit(tmp_path: Path) -> None:
    """The commit that fills the WAL does not copy it back: a worker thread does, every N commits,
    with a connection of its own; the data is all there after a restart."""
    import threading

    path = tmp_path / "hitl.db"
    storage = SqliteCheckpointStorage(path)
    storage.wal_checkpoints.every_commits = 10
    assert storage._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 20_000  # only a safety net
    for n in range(35):
        await storage.save(make_checkpoint(f"s-{n}"), expected_version=None)
        running = storage.wal_checkpoints._running
        if running is not None:  # the loop goes on serving meanwhile; the test waits to count exactly
            await running
    await storage.close()
    checkpoints = storage.wal_checkpoints
    assert checkpoints.runs == 3 and checkpoints.last_thread not in (None, threading.get_ident())
    assert checkpoints.last_result is not None and checkpoints.last_result[0] == 0  # not busy
    assert checkpoints.last_result[2] > 0  # it copied frames back into the file

    reopened = SqliteCheckpointStorage(path)
    assert all([await reopened.load(f"s-{n}") is not None for n in range(35)])
    await reopened.close()


async def test_commits_outside_an_event_loop_leave_the_wal_to_the_safety_net(tmp_path: Path) -> None:
    """A migration or a script commits with no loop to hand work to: nothing is started, nothing breaks."""
    storage = SqliteCheckpointStorage(tmp_path / "hitl.db")
    storage.wal_checkpoints.every_commits = 1

    def commit_without_a_loop() -> None:
        with storage._transaction() as db:
            db.execute("DELETE FROM sessions WHERE session_id = 'none'")

    await asyncio.to_thread(commit_without_a_loop)
    assert storage.wal_checkpoints.runs == 0 and storage.wal_checkpoints._running is None
    await storage.close()


async def test_the_wal_is_started_afresh_by_the_worker_under_steady_writes(tmp_path: Path) -> None:
    """Copying back is not enough while writes go on: SQLite reuses the WAL only when a writer finds it
    all copied, so it grew until the automatic checkpoint ran on the loop. The worker's RESTART
    checkpoint starts it afresh instead, and the WAL file stays small."""
    path = tmp_path / "hitl.db"
    storage = SqliteCheckpointStorage(path)
    checkpoints = storage.wal_checkpoints
    checkpoints.every_commits, checkpoints.restart_after_frames = 5, 40
    wal = path.with_name(path.name + "-wal")
    for n in range(300):  # steady writes: the loop goes on while the worker checkpoints
        await storage.save(make_checkpoint(f"s-{n}"), expected_version=None)
        await asyncio.sleep(0)
    wal_bytes = wal.stat().st_size  # (closing the last connection removes the file)
    await storage.close()
    frames_written = 300 * 4  # at least: the session, its index rows and participants, page 1
    assert checkpoints.restarts >= 2
    assert wal_bytes < frames_written * 4120 / 3  # reused from its start, not appended to throughout
    reopened = SqliteCheckpointStorage(path)
    assert all([await reopened.load(f"s-{n}") is not None for n in range(300)])
    await reopened.close()


async def test_writers_wait_for_the_restart_without_blocking_the_loop(tmp_path: Path) -> None:
    """While the worker's RESTART checkpoint waits for a reader still on the old WAL, a save awaits
    (the loop serves others meanwhile) instead of sleeping in SQLite's busy handler; it commits once
    the restart is done."""
    path = tmp_path / "hitl.db"
    storage = SqliteCheckpointStorage(path)
    checkpoints = storage.wal_checkpoints
    checkpoints.every_commits, checkpoints.restart_after_frames, checkpoints.restart_wait_ms = 2, 1, 10_000
    await storage.save(make_checkpoint("s-0"), expected_version=None)
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM sessions").fetchone() == (1,)  # a snapshot in the WAL
    await storage.save(make_checkpoint("s-1"), expected_version=None)  # the 2nd commit: the worker starts
    for _ in range(2_000):  # a flag the worker thread sets: polled, for at most 10 s
        if checkpoints._restarting:  # the RESTART now waits for the reader
            break
        await asyncio.sleep(0.005)
    assert checkpoints._restarting
    save = asyncio.create_task(storage.save(make_checkpoint("s-2"), expected_version=None))
    for _ in range(20):  # the loop goes on serving (a save in SQLite's busy handler would hold it ...
        await asyncio.sleep(0.005)
    assert not save.done()  # ... for 10 s and then fail); the save waits for the restart instead
    reader.execute("COMMIT")  # the reader leaves: the restart finishes, the save goes ahead
    await asyncio.wait_for(save, 10)
    assert checkpoints.restarts == 1 and checkpoints.last_result is not None and checkpoints.last_result[0] == 0
    assert await storage.load("s-2") is not None
    reader.close()
    await storage.close()
