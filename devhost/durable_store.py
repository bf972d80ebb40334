"""SQLite persistence for the local Durable runtime: instances (with history) and pending timers.

Why SQLite and why the whole history per row: a restart of the devhost must continue every
instance exactly where it was (timers re-armed, waits still waiting, unfinished activities run
again), which is what the Durable host gets from its task hub. One row per instance holding the
history and the inbox as JSON keeps an episode's commit a single parameterised ``UPDATE`` in one
transaction together with its timer rows, so a crash can never leave a timer without the
history that created it. Calls run on the event loop: with WAL and ``synchronous=NORMAL`` a
commit is a local append (see ``hitl_core/checkpoint/sqlite.py`` for the same trade-off).

Every statement is parameterised.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .durable_history import Event, iso, parse_iso

TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Terminated"})
"""Runtime statuses after which an instance accepts no more events."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id        TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    execution_id       TEXT NOT NULL,
    runtime_status     TEXT NOT NULL,
    input              TEXT,
    output             TEXT,
    custom_status      TEXT,
    created_time       TEXT NOT NULL,
    last_updated_time  TEXT NOT NULL,
    version            TEXT NOT NULL,
    parent_instance_id TEXT,
    parent_task_id     INTEGER,
    history            TEXT NOT NULL,
    inbox              TEXT NOT NULL,
    progress           TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instances_status ON instances(runtime_status);
CREATE TABLE IF NOT EXISTS timers (
    instance_id  TEXT NOT NULL,
    timer_id     INTEGER NOT NULL,
    execution_id TEXT NOT NULL,
    fire_at      TEXT NOT NULL,
    PRIMARY KEY (instance_id, timer_id)
) WITHOUT ROWID;
"""

_COLUMNS = (
    "instance_id, name, execution_id, runtime_status, input, output, custom_status, created_time, "
    "last_updated_time, version, parent_instance_id, parent_task_id, history, inbox, progress"
)


@dataclass
class RetryState:
    """Where one ``CallActivityWithRetry`` stands; keyed in :class:`Progress` by its current id.

    Mirrors DurableTask.Core's retry interceptor: attempt, on failure a timer of
    ``interval_ms``, then the next attempt; after the last failed attempt one more timer, then
    the failure is final (the SDK waits for that extra timer too).
    """

    name: str
    input: str | None
    interval_ms: int
    max_attempts: int
    attempts: int = 1
    phase: str = "task"  # "task": an attempt is running; "timer": waiting before the next one


@dataclass
class Progress:
    """The runtime's bookkeeping beside the history, needed to map actions to sequence numbers.

    ``next_id`` is the next ``EventId`` DurableTask.Core would hand out; ``actions_seen`` how
    many top-level actions (yields) were already scheduled; ``timer_paths`` maps an action path
    to its timer id so a later ``isCanceled`` can cancel the right timer.
    """

    next_id: int = 0
    actions_seen: int = 0
    timer_paths: dict[str, int] = field(default_factory=dict)
    retries: dict[int, RetryState] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise (retry keys become strings in JSON)."""
        doc = asdict(self)
        doc["retries"] = {str(key): value for key, value in doc["retries"].items()}
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Progress:
        """Inverse of :meth:`to_json`."""
        doc = json.loads(text)
        return cls(
            next_id=int(doc.get("next_id", 0)),
            actions_seen=int(doc.get("actions_seen", 0)),
            timer_paths={str(k): int(v) for k, v in doc.get("timer_paths", {}).items()},
            retries={int(k): RetryState(**v) for k, v in doc.get("retries", {}).items()},
        )


@dataclass
class InstanceRecord:
    """One orchestration instance as stored; payload fields hold JSON text (as on the wire)."""

    instance_id: str
    name: str
    execution_id: str
    runtime_status: str
    input: str | None
    created_time: datetime
    last_updated_time: datetime
    version: str = ""
    output: str | None = None
    custom_status: str | None = None
    parent_instance_id: str | None = None
    parent_task_id: int | None = None
    history: list[Event] = field(default_factory=list)
    inbox: list[Event] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)

    @property
    def is_terminal(self) -> bool:
        """Completed, Failed or Terminated: no more events are accepted."""
        return self.runtime_status in TERMINAL_STATUSES


@dataclass(frozen=True)
class StoredTimer:
    """A durable timer that has not fired yet."""

    instance_id: str
    execution_id: str
    timer_id: int
    fire_at: datetime


class DurableStore:
    """The runtime's SQLite file: one connection, used from the event loop thread only."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (creating the file and schema when missing); idempotent."""
        if self._conn is not None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    def close(self) -> None:
        """Close the connection; idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection (opening lazily keeps direct API use simple in tests)."""
        if self._conn is None:
            self.open()
        assert self._conn is not None
        return self._conn

    # -- instances ------------------------------------------------------------------------

    def load(self, instance_id: str) -> InstanceRecord | None:
        """The stored instance, or None."""
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM instances WHERE instance_id = ?",  # noqa: S608 - constant columns
            (instance_id,),
        ).fetchone()
        return _record(row) if row is not None else None

    def all_instances(self) -> list[InstanceRecord]:
        """Every stored instance, oldest first (the devhost holds few; filters run in Python)."""
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM instances ORDER BY created_time, instance_id"  # noqa: S608
        ).fetchall()
        return [_record(row) for row in rows]

    def non_terminal_ids(self) -> list[str]:
        """Ids of instances a restart must resume."""
        placeholders = ",".join("?" for _ in TERMINAL_STATUSES)
        rows = self.conn.execute(
            f"SELECT instance_id FROM instances WHERE runtime_status NOT IN ({placeholders}) "  # noqa: S608
            "ORDER BY created_time",
            tuple(sorted(TERMINAL_STATUSES)),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def save(
        self,
        record: InstanceRecord,
        *,
        add_timers: Iterable[tuple[int, datetime]] = (),
        drop_timers: Iterable[int] = (),
        drop_all_timers: bool = False,
    ) -> None:
        """Upsert the instance and change its timer rows in one transaction."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"INSERT OR REPLACE INTO instances ({_COLUMNS}) "  # noqa: S608 - constant columns
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.instance_id,
                    record.name,
                    record.execution_id,
                    record.runtime_status,
                    record.input,
                    record.output,
                    record.custom_status,
                    iso(record.created_time),
                    iso(record.last_updated_time),
                    record.version,
                    record.parent_instance_id,
                    record.parent_task_id,
                    json.dumps(record.history, separators=(",", ":")),
                    json.dumps(record.inbox, separators=(",", ":")),
                    record.progress.to_json(),
                ),
            )
            if drop_all_timers:
                conn.execute("DELETE FROM timers WHERE instance_id = ?", (record.instance_id,))
            for timer_id in drop_timers:
                conn.execute(
                    "DELETE FROM timers WHERE instance_id = ? AND timer_id = ?", (record.instance_id, timer_id)
                )
            for timer_id, fire_at in add_timers:
                conn.execute(
                    "INSERT OR REPLACE INTO timers (instance_id, timer_id, execution_id, fire_at) VALUES (?, ?, ?, ?)",
                    (record.instance_id, timer_id, record.execution_id, iso(fire_at)),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def delete(self, instance_ids: Sequence[str]) -> int:
        """Delete instances (and their timers); returns how many instance rows went."""
        conn = self.conn
        deleted = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for instance_id in instance_ids:
                conn.execute("DELETE FROM timers WHERE instance_id = ?", (instance_id,))
                deleted += conn.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return deleted

    # -- timers ---------------------------------------------------------------------------

    def timers(self, instance_id: str | None = None) -> list[StoredTimer]:
        """Pending timers, soonest first (all of them, or one instance's)."""
        if instance_id is None:
            rows = self.conn.execute(
                "SELECT instance_id, execution_id, timer_id, fire_at FROM timers ORDER BY fire_at"
            ).fetchall()
        else:
            rows = self.conn.execute(
                "SELECT instance_id, execution_id, timer_id, fire_at FROM timers WHERE instance_id = ? "
                "ORDER BY fire_at",
                (instance_id,),
            ).fetchall()
        return [StoredTimer(str(r[0]), str(r[1]), int(r[2]), parse_iso(str(r[3]))) for r in rows]


def _record(row: Sequence[Any]) -> InstanceRecord:
    return InstanceRecord(
        instance_id=str(row[0]),
        name=str(row[1]),
        execution_id=str(row[2]),
        runtime_status=str(row[3]),
        input=row[4],
        output=row[5],
        custom_status=row[6],
        created_time=parse_iso(str(row[7])),
        last_updated_time=parse_iso(str(row[8])),
        version=str(row[9]),
        parent_instance_id=row[10],
        parent_task_id=row[11],
        history=json.loads(row[12]),
        inbox=json.loads(row[13]),
        progress=Progress.from_json(str(row[14])),
    )
