"""SqliteCheckpointStorage specifics: the inbox is one parameterised keyset query on an index."""

from __future__ import annotations

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
