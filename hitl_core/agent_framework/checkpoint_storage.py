"""Agent Framework ``CheckpointStorage`` on hitl's SQLite, Redis and Cosmos DB backends.

Microsoft Agent Framework (``agent_framework``, 1.23) saves a :class:`~agent_framework.WorkflowCheckpoint`
after every superstep and restores one with ``workflow.run(checkpoint_id=..., checkpoint_storage=...,
responses=...)``. The three classes here implement its ``CheckpointStorage`` protocol (``save``,
``load``, ``list_checkpoints``, ``delete``, ``get_latest``, ``list_checkpoint_ids``) so that any
Agent Framework user can keep checkpoints in SQLite, Redis or Cosmos DB, without the rest of hitl:

* :class:`SqliteAgentCheckpointStorage` - one SQLite file (WAL), shareable by the processes of
  one machine;
* :class:`RedisAgentCheckpointStorage` - Redis (``redis.asyncio``), every write one Lua script;
* :class:`CosmosAgentCheckpointStorage` - one Cosmos DB (NoSQL) container partitioned by
  ``/scope`` (``azure.cosmos.aio``), every operation within one logical partition.

Encoding: Agent Framework's own, and nothing else
------------------------------------------------
A checkpoint is turned into a document by Agent Framework's ``encode_checkpoint_value``: JSON-native
values stay plain JSON, everything else (dataclasses, tuples, datetimes, your own classes) becomes
AF's ``{"__pickled__": <base64 pickle>, "__type__": "module:qualname"}`` marker. The document is
stored as JSON *text*. Reading goes ONLY through ``decode_checkpoint_value`` with an allow-list, i.e.
AF's restricted unpickler: built-in value types, ``agent_framework`` and ``openai.types`` classes
load; any other class is refused unless it is named in ``allowed_checkpoint_types``
(``["my_app.models:MyState"]``, the same meaning as AF's ``FileCheckpointStorage``) or registered
process-wide with ``agent_framework.register_checkpoint_type``. **Register the types your
executors put in state and request payloads**, or their checkpoints will not load. A save is
refused (``WorkflowCheckpointException``) when this storage could not load the checkpoint back, as
``FileCheckpointStorage`` does, so the problem shows at the save, not at the resume weeks later.
Pickle is still pickle: the restricted loader narrows what can be built, it is not a security
boundary, so only this application may write to the store.

Scope
-----
Every storage instance is bound to a ``scope`` (a tenant, an app, or - usually - one session or
conversation): every key, row and document carries it, and nothing outside it is read or written.
Checkpoint ids are unique within a scope. On Cosmos DB the scope is the partition key value, so
every operation is a point read/write or a single-partition query (never a cross-partition one); on
Redis it is a hash tag (``{scope}``) in every key, so a Redis Cluster keeps a scope on one slot and
the scripts stay legal; on SQLite it is a column of every primary key.

Immutable checkpoints, one head, stale writers
----------------------------------------------
Checkpoints are immutable: saving an id that exists with different content raises
:class:`CheckpointConflictError`; saving it again with identical content is a no-op (a retried save).

Per ``(scope, workflow_name)`` the storage keeps a **head**: the id of the latest checkpoint. What
Agent Framework writes (``_runner.py``/``_workflow.py``, checked against 1.23): the first checkpoint of
a fresh ``workflow.run(message)`` has ``previous_checkpoint_id=None``; every later one names the
checkpoint saved before it; a run restored from checkpoint X (``run(checkpoint_id=X, ...)``) writes its
first checkpoint - the "response-entry" checkpoint, before any executor runs - with
``previous_checkpoint_id=X``. Hence the rule, applied atomically with the write:

* ``previous_checkpoint_id`` is None (a fresh run): accepted; it starts a new lineage and becomes the
  head (a newer run supersedes an older one, as AF's own storages return the newest as latest);
* ``previous_checkpoint_id`` equals the head, or there is no head (deleted or expired): accepted;
  the checkpoint becomes the head;
* otherwise the save raises :class:`StaleCheckpointError` and writes nothing: another process resumed
  from the same checkpoint and saved first. Of two concurrent resumes of one pause exactly one
  gets its first checkpoint in.

``get_latest`` returns the head (or, if it was deleted or has expired, the newest checkpoint left).
The head is updated by a conditional write: in SQLite within the ``BEGIN IMMEDIATE`` transaction
that inserts the checkpoint (``UPDATE ... WHERE checkpoint_id = <old head>``), in Redis inside the
Lua script that does the write, in Cosmos DB by an ``If-Match`` replace (or a create) of the head
document, in one transactional batch with the checkpoint's create.

Agent Framework swallows save errors: its runner logs "Failed to create checkpoint ... this does not
fail the workflow run" and carries on, so on its own a stale writer's run goes on executing its
handlers, merely without checkpoints. To make the error reach the caller, run the resume inside
:func:`abort_on_stale_checkpoint`::

    with abort_on_stale_checkpoint():
        result = await workflow.run(checkpoint_id=cid, checkpoint_storage=storage, responses=answers)

Inside it a stale save unwinds the run at once (as a private ``BaseException``, which AF's
``except Exception`` does not catch) and the block raises :class:`StaleCheckpointError`. On a resume
with ``responses=`` AF saves the response-entry checkpoint before any executor runs, so the stale
run's response handlers never execute.

TTL
---
``ttl_seconds`` (None: keep forever) expires each checkpoint that long after its save, and the head
that long after the last save. SQLite stores ``expires_at``, filters every read on it and deletes
expired rows on each save; Redis sets ``PEXPIRE`` on the keys; Cosmos DB sets the documents' ``ttl``
(the container needs TTL on: ``defaultTtl`` -1, as ``create_if_missing`` creates it) and also stores
``expires_at`` on the storage's clock, which reads honour, so expiry is exact before Cosmos' background
deletion (and on the local stand-in, which stores ``ttl`` but never deletes).

Connections follow hitl's backends (:mod:`hitl_core.checkpoint`): SQLite is called on the event loop
(WAL commits are cheaper than a thread hop), Redis through one blocking connection pool, Cosmos DB
through ``azure.cosmos.aio``. redis-py and the Cosmos SDK are imported when their class is first
built. Every class is an async context manager that closes what it opened. Backend failures
(connection refused, throttling, ...) propagate as the SDK raised them.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from agent_framework import WorkflowCheckpoint, WorkflowCheckpointException
from agent_framework._workflows._checkpoint_encoding import decode_checkpoint_value, encode_checkpoint_value

from ..checkpoint.cosmos_container import ContainerOwner
from ..checkpoint.sqlite import BackgroundWalCheckpoints, commit_or_roll_back, open_database
from ..netaddr import is_loopback_endpoint

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from agent_framework import CheckpointStorage
    from azure.cosmos.aio import ContainerProxy, CosmosClient

    from ..settings import Settings

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# -- errors ---------------------------------------------------------------------------------------
class StaleCheckpointError(WorkflowCheckpointException):
    """A save continued from a checkpoint that is no longer the latest of its workflow (stale writer).

    Raised when ``previous_checkpoint_id`` is not the head of ``(scope, workflow_name)``: another
    process resumed from the same checkpoint and saved first. Nothing was written. Resume from
    ``head_checkpoint_id`` instead, or discard this run.
    """

    def __init__(self, *, scope: str, workflow_name: str, checkpoint_id: str, previous_checkpoint_id: str,
                 head_checkpoint_id: str) -> None:
        self.scope = scope
        self.workflow_name = workflow_name
        self.checkpoint_id = checkpoint_id
        self.previous_checkpoint_id = previous_checkpoint_id
        self.head_checkpoint_id = head_checkpoint_id
        super().__init__(
            f"stale checkpoint writer: checkpoint {checkpoint_id!r} of workflow {workflow_name!r} in scope "
            f"{scope!r} continues from {previous_checkpoint_id!r}, but the latest checkpoint there is now "
            f"{head_checkpoint_id!r} (another run resumed from {previous_checkpoint_id!r} and saved first); "
            f"nothing was written - resume from {head_checkpoint_id!r} or discard this run",
            log_level=None,
        )


class CheckpointConflictError(WorkflowCheckpointException):
    """A checkpoint id that is already stored was saved again with different content.

    Checkpoints are immutable; an identical re-save (a retry) is accepted and changes nothing.
    """

    def __init__(self, *, scope: str, checkpoint_id: str) -> None:
        self.scope = scope
        self.checkpoint_id = checkpoint_id
        super().__init__(
            f"checkpoint {checkpoint_id!r} already exists in scope {scope!r} with different content; "
            "checkpoints are immutable (save a new checkpoint id instead)",
            log_level=None,
        )


# -- turning a stale save into the caller's error ---------------------------------------------------
class _StaleWriterAbort(BaseException):
    """Carries a :class:`StaleCheckpointError` through Agent Framework up to the guard.

    A ``BaseException`` on purpose: AF's runner catches ``Exception`` around every checkpoint save
    and only logs it, so an ordinary exception could never end the run. Only raised while a
    :class:`StaleCheckpointGuard` is active in the saving context, which turns it back into the
    :class:`StaleCheckpointError` it carries.
    """

    def __init__(self, error: StaleCheckpointError) -> None:
        super().__init__(str(error))
        self.error = error


_ACTIVE_GUARD: contextvars.ContextVar[StaleCheckpointGuard | None] = contextvars.ContextVar(
    "hitl_agent_framework_stale_checkpoint_guard", default=None)


class StaleCheckpointGuard:
    """Context manager (``with`` or ``async with``) returned by :func:`abort_on_stale_checkpoint`.

    While it is active in the current context (and in the tasks started from it), a save that is
    refused as stale ends the enclosing run immediately and the block raises the
    :class:`StaleCheckpointError`; ``error`` keeps it for inspection afterwards.
    """

    def __init__(self) -> None:
        self.error: StaleCheckpointError | None = None
        self._active = False
        self._token: contextvars.Token[StaleCheckpointGuard | None] | None = None

    @property
    def active(self) -> bool:
        return self._active

    def __enter__(self) -> Self:
        if self._token is not None:
            raise RuntimeError("a StaleCheckpointGuard cannot be entered twice")
        self._token = _ACTIVE_GUARD.set(self)
        self._active = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._active = False
        if self._token is not None:
            _ACTIVE_GUARD.reset(self._token)
        if isinstance(exc, _StaleWriterAbort):
            self.error = exc.error
            raise exc.error.with_traceback(exc.__traceback__) from None

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


def abort_on_stale_checkpoint() -> StaleCheckpointGuard:
    """Make a stale checkpoint save end the Agent Framework run and raise :class:`StaleCheckpointError`.

    Agent Framework logs and ignores checkpoint save failures, so without this a run resumed from a
    checkpoint that another process already continued would carry on (its handlers would execute
    again) and only a warning would say its checkpoints were refused. Wrap ``workflow.run(...)`` -
    and the iteration of a streamed run - in it::

        with abort_on_stale_checkpoint():
            result = await workflow.run(checkpoint_id=cid, checkpoint_storage=storage, responses=answers)
    """
    return StaleCheckpointGuard()


# -- shared behaviour -------------------------------------------------------------------------------
def _timestamp_us(checkpoint: WorkflowCheckpoint) -> int:
    """The checkpoint's ISO 8601 timestamp as integer microseconds since the epoch (the listing order)."""
    try:
        moment = dt.datetime.fromisoformat(checkpoint.timestamp)
    except (TypeError, ValueError) as exc:
        raise WorkflowCheckpointException(
            f"checkpoint {checkpoint.checkpoint_id!r} has a timestamp that is not ISO 8601: {checkpoint.timestamp!r}"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class _AgentCheckpointStorageBase:
    """Encoding, the stale-writer rule and the protocol methods every backend shares."""

    def __init__(self, *, scope: str, ttl_seconds: int | None, allowed_checkpoint_types: Sequence[str] | None,
                 clock: Clock) -> None:
        if not isinstance(scope, str) or not scope:
            raise ValueError("scope must be a non-empty string (a tenant, app or session id)")
        if ttl_seconds is not None and ttl_seconds < 0:
            raise ValueError("ttl_seconds must not be negative (None or 0: keep forever)")
        if isinstance(allowed_checkpoint_types, str):
            raise TypeError("allowed_checkpoint_types is a list of 'module:qualname' strings, not one string")
        self.scope = scope
        #: Seconds a checkpoint (and the head) lives after its save; None keeps them.
        self.ttl_seconds = ttl_seconds or None
        #: Extra ``module:qualname`` types AF's restricted unpickler may build (beyond its safe set).
        self.allowed_checkpoint_types: frozenset[str] = frozenset(allowed_checkpoint_types or ())
        self._clock = clock

    # -- documents ----------------------------------------------------------------------------
    def _encode(self, checkpoint: WorkflowCheckpoint) -> str:
        """The checkpoint as JSON text in AF's encoding, refused if this storage could not load it back."""
        try:
            encoded = encode_checkpoint_value(checkpoint.to_dict())
            decode_checkpoint_value(encoded, allowed_types=self.allowed_checkpoint_types)
            return json.dumps(encoded, ensure_ascii=False, separators=(",", ":"))
        except WorkflowCheckpointException as exc:
            raise WorkflowCheckpointException(
                f"checkpoint {checkpoint.checkpoint_id!r} of workflow {checkpoint.workflow_name!r} would not load "
                f"back from this storage, so it was not saved: {exc}. Name the type in allowed_checkpoint_types "
                "or register it with agent_framework.register_checkpoint_type"
            ) from exc
        except Exception as exc:
            raise WorkflowCheckpointException(
                f"checkpoint {checkpoint.checkpoint_id!r} of workflow {checkpoint.workflow_name!r} cannot be "
                f"encoded: {type(exc).__name__}: {exc}"
            ) from exc

    def _decode(self, text: str | bytes, checkpoint_id: str) -> WorkflowCheckpoint:
        """Rebuild a checkpoint through AF's restricted loader only."""
        try:
            encoded = json.loads(text)
        except ValueError as exc:
            raise WorkflowCheckpointException(
                f"checkpoint {checkpoint_id!r} in scope {self.scope!r} is not valid JSON") from exc
        try:
            decoded = decode_checkpoint_value(encoded, allowed_types=self.allowed_checkpoint_types)
        except WorkflowCheckpointException as exc:
            raise WorkflowCheckpointException(
                f"checkpoint {checkpoint_id!r} in scope {self.scope!r} cannot be loaded: {exc}. If the type is "
                "yours, name it in allowed_checkpoint_types=['module:qualname'] or register it with "
                "agent_framework.register_checkpoint_type"
            ) from exc
        if not isinstance(decoded, dict):
            raise WorkflowCheckpointException(f"checkpoint {checkpoint_id!r} in scope {self.scope!r} is not an object")
        return WorkflowCheckpoint.from_dict(decoded)

    def _not_found(self, checkpoint_id: str) -> WorkflowCheckpointException:
        return WorkflowCheckpointException(
            f"No checkpoint found with ID {checkpoint_id} in scope {self.scope!r}", log_level=None)

    def _expires_at(self, now: float) -> float | None:
        return now + self.ttl_seconds if self.ttl_seconds else None

    def _stale_against(self, checkpoint: WorkflowCheckpoint, head: str | None) -> StaleCheckpointError | None:
        """The stale-writer rule (module docstring): None when ``checkpoint`` may become the head."""
        previous = checkpoint.previous_checkpoint_id
        if previous is None or head is None or head == previous:
            return None
        return StaleCheckpointError(scope=self.scope, workflow_name=checkpoint.workflow_name,
                                    checkpoint_id=checkpoint.checkpoint_id, previous_checkpoint_id=previous,
                                    head_checkpoint_id=head)

    def _conflict(self, checkpoint: WorkflowCheckpoint) -> CheckpointConflictError:
        return CheckpointConflictError(scope=self.scope, checkpoint_id=checkpoint.checkpoint_id)

    def _decode_all(self, rows: Sequence[tuple[str, str | bytes]]) -> list[WorkflowCheckpoint]:
        """Decode listed documents; one that cannot load is left out with a warning (as AF's file storage)."""
        found: list[WorkflowCheckpoint] = []
        for checkpoint_id, text in rows:
            try:
                found.append(self._decode(text, checkpoint_id))
            except WorkflowCheckpointException as exc:
                logger.warning("skipping checkpoint %s in scope %r: %s", checkpoint_id, self.scope, exc)
        return found

    # -- the protocol ---------------------------------------------------------------------------
    async def save(self, checkpoint: WorkflowCheckpoint) -> str:
        """Store ``checkpoint`` and make it the head of its workflow; return its id.

        Raises :class:`StaleCheckpointError` (nothing written) when it continues from a checkpoint that
        is no longer the head, :class:`CheckpointConflictError` when its id exists with other content.
        """
        text = self._encode(checkpoint)
        try:
            await self._save(checkpoint, text, _timestamp_us(checkpoint))
        except StaleCheckpointError as exc:
            guard = _ACTIVE_GUARD.get()
            if guard is not None and guard.active:
                raise _StaleWriterAbort(exc) from None
            raise
        return checkpoint.checkpoint_id

    async def load(self, checkpoint_id: str) -> WorkflowCheckpoint:
        """The checkpoint; ``WorkflowCheckpointException`` if it is not in this scope (or expired)."""
        text = await self._load_text(checkpoint_id)
        if text is None:
            raise self._not_found(checkpoint_id)
        return self._decode(text, checkpoint_id)

    async def list_checkpoints(self, *, workflow_name: str) -> list[WorkflowCheckpoint]:
        """The workflow's checkpoints in this scope, oldest first (by timestamp, then id)."""
        return self._decode_all(await self._list_texts(workflow_name))

    async def list_checkpoint_ids(self, *, workflow_name: str) -> list[str]:
        """The workflow's checkpoint ids in this scope, oldest first; documents are not decoded."""
        return await self._list_ids(workflow_name)

    async def get_latest(self, *, workflow_name: str) -> WorkflowCheckpoint | None:
        """The head: the checkpoint the next resume must continue from (None if there is none).

        When the head was deleted or has expired, the newest checkpoint left is returned instead.
        """
        found = await self._latest_text(workflow_name)
        if found is None:
            return None
        checkpoint_id, text = found
        return self._decode(text, checkpoint_id)

    async def delete(self, checkpoint_id: str) -> bool:
        """Remove the checkpoint (and the head, if it pointed there); False if it was not stored."""
        return await self._delete(checkpoint_id)

    async def close(self) -> None:
        """Release what this storage opened."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- per backend --------------------------------------------------------------------------
    async def _save(self, checkpoint: WorkflowCheckpoint, text: str, ts_us: int) -> None:
        raise NotImplementedError

    async def _load_text(self, checkpoint_id: str) -> str | bytes | None:
        raise NotImplementedError

    async def _list_texts(self, workflow_name: str) -> list[tuple[str, str | bytes]]:
        raise NotImplementedError

    async def _list_ids(self, workflow_name: str) -> list[str]:
        raise NotImplementedError

    async def _latest_text(self, workflow_name: str) -> tuple[str, str | bytes] | None:
        raise NotImplementedError

    async def _delete(self, checkpoint_id: str) -> bool:
        raise NotImplementedError


# -- SQLite ---------------------------------------------------------------------------------------
_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS af_checkpoints (
    scope                  TEXT NOT NULL,
    checkpoint_id          TEXT NOT NULL,
    workflow_name          TEXT NOT NULL,
    previous_checkpoint_id TEXT,
    ts_us                  INTEGER NOT NULL,
    doc                    TEXT NOT NULL,
    expires_at             REAL,
    PRIMARY KEY (scope, checkpoint_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS af_checkpoints_by_workflow ON af_checkpoints(scope, workflow_name, ts_us, checkpoint_id);
CREATE INDEX IF NOT EXISTS af_checkpoints_expiry ON af_checkpoints(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS af_checkpoint_heads (
    scope         TEXT NOT NULL,
    workflow_name TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    expires_at    REAL,
    PRIMARY KEY (scope, workflow_name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS af_checkpoint_heads_expiry ON af_checkpoint_heads(expires_at) WHERE expires_at IS NOT NULL;
"""

class SqliteAgentCheckpointStorage(_AgentCheckpointStorageBase):
    """Agent Framework checkpoints in one SQLite file (tables ``af_checkpoints`` and ``af_checkpoint_heads``).

    Safe for several processes on one machine (WAL; writers queue for the write lock for up to
    ``busy_timeout_ms``). The tables do not clash with hitl's own, so one file can hold both.
    Calls run on the event loop, as in :class:`hitl_core.checkpoint.SqliteCheckpointStorage`: a WAL
    commit with ``synchronous=NORMAL`` is cheaper than a thread hop; pass ``synchronous="FULL"`` to
    fsync every commit.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        scope: str,
        ttl_seconds: int | None = None,
        allowed_checkpoint_types: Sequence[str] | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_ms: int = 10_000,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(scope=scope, ttl_seconds=ttl_seconds, allowed_checkpoint_types=allowed_checkpoint_types,
                         clock=clock)
        self.path = Path(path)
        self._db = open_database(self.path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
        #: the WAL is copied back into the file off the event loop, as for the session checkpoints
        self.wal_checkpoints = BackgroundWalCheckpoints(self.path, self._db)
        self._db.executescript(_SQLITE_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken first, so the head check and the
        write cannot interleave with another process's; any exception rolls back."""
        self._db.execute("BEGIN IMMEDIATE")
        with commit_or_roll_back(self._db, self.wal_checkpoints) as db:
            yield db

    async def _save(self, checkpoint: WorkflowCheckpoint, text: str, ts_us: int) -> None:
        now = self._clock()
        expires_at = self._expires_at(now)
        scope, cid, workflow = self.scope, checkpoint.checkpoint_id, checkpoint.workflow_name
        async with self.wal_checkpoints.writing(self._transaction()) as db:
            db.execute("DELETE FROM af_checkpoints WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            db.execute("DELETE FROM af_checkpoint_heads WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            row = db.execute("SELECT doc FROM af_checkpoints WHERE scope = ? AND checkpoint_id = ?",
                             (scope, cid)).fetchone()
            if row is not None:
                if row[0] == text:
                    return  # an identical re-save: nothing changes
                raise self._conflict(checkpoint)
            head_row = db.execute("SELECT checkpoint_id FROM af_checkpoint_heads WHERE scope = ? AND workflow_name = ?",
                                  (scope, workflow)).fetchone()
            head: str | None = head_row[0] if head_row is not None else None
            stale = self._stale_against(checkpoint, head)
            if stale is not None:
                raise stale
            db.execute(
                "INSERT INTO af_checkpoints(scope, checkpoint_id, workflow_name, previous_checkpoint_id, ts_us, doc,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (scope, cid, workflow, checkpoint.previous_checkpoint_id, ts_us, text, expires_at),
            )
            if head is None:
                cur = db.execute(
                    "INSERT INTO af_checkpoint_heads(scope, workflow_name, checkpoint_id, expires_at)"
                    " VALUES (?, ?, ?, ?)",
                    (scope, workflow, cid, expires_at))
            else:
                cur = db.execute(
                    "UPDATE af_checkpoint_heads SET checkpoint_id = ?, expires_at = ?"
                    " WHERE scope = ? AND workflow_name = ? AND checkpoint_id = ?",
                    (cid, expires_at, scope, workflow, head))
            if cur.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; never write past a moved head
                raise WorkflowCheckpointException(f"the head of workflow {workflow!r} moved during the save of {cid!r}")

    async def _load_text(self, checkpoint_id: str) -> str | None:
        row = self._db.execute(
            "SELECT doc FROM af_checkpoints WHERE scope = ? AND checkpoint_id = ?"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (self.scope, checkpoint_id, self._clock())).fetchone()
        return None if row is None else str(row[0])

    async def _list_texts(self, workflow_name: str) -> list[tuple[str, str | bytes]]:
        rows = self._db.execute(
            "SELECT checkpoint_id, doc FROM af_checkpoints WHERE scope = ? AND workflow_name = ?"
            " AND (expires_at IS NULL OR expires_at > ?)"
            " ORDER BY ts_us, checkpoint_id",
            (self.scope, workflow_name, self._clock())).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    async def _list_ids(self, workflow_name: str) -> list[str]:
        rows = self._db.execute(
            "SELECT checkpoint_id FROM af_checkpoints WHERE scope = ? AND workflow_name = ?"
            " AND (expires_at IS NULL OR expires_at > ?)"
            " ORDER BY ts_us, checkpoint_id",
            (self.scope, workflow_name, self._clock())).fetchall()
        return [str(r[0]) for r in rows]

    async def _latest_text(self, workflow_name: str) -> tuple[str, str | bytes] | None:
        now = self._clock()
        row = self._db.execute(
            "SELECT c.checkpoint_id, c.doc FROM af_checkpoint_heads h JOIN af_checkpoints c"
            " ON c.scope = h.scope AND c.checkpoint_id = h.checkpoint_id"
            " WHERE h.scope = ? AND h.workflow_name = ? AND (h.expires_at IS NULL OR h.expires_at > ?)"
            " AND (c.expires_at IS NULL OR c.expires_at > ?)",
            (self.scope, workflow_name, now, now)).fetchone()
        if row is None:  # no head (deleted or expired): the newest checkpoint left
            row = self._db.execute(
                "SELECT checkpoint_id, doc FROM af_checkpoints WHERE scope = ? AND workflow_name = ?"
                " AND (expires_at IS NULL OR expires_at > ?)"
                " ORDER BY ts_us DESC, checkpoint_id DESC LIMIT 1",
                (self.scope, workflow_name, now)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    async def _delete(self, checkpoint_id: str) -> bool:
        async with self.wal_checkpoints.writing(self._transaction()) as db:
            row = db.execute(
                "SELECT workflow_name FROM af_checkpoints WHERE scope = ? AND checkpoint_id = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (self.scope, checkpoint_id, self._clock())).fetchone()
            db.execute("DELETE FROM af_checkpoints WHERE scope = ? AND checkpoint_id = ?", (self.scope, checkpoint_id))
            if row is None:
                return False
            db.execute("DELETE FROM af_checkpoint_heads WHERE scope = ? AND workflow_name = ? AND checkpoint_id = ?",
                       (self.scope, row[0], checkpoint_id))
        return True

    async def close(self) -> None:
        """Close the SQLite connection (after a WAL checkpoint under way)."""
        await self.wal_checkpoints.close()
        self._db.close()


# -- Redis ------------------------------------------------------------------------------------------
# KEYS: checkpoint hash, head string, ids zset.
# ARGV: doc, workflow_name, checkpoint_id, has_previous ('1'|'0'), previous, ttl_ms ('0': none), score.
# Returns {'saved'|'same'|'conflict'|'stale', head}.
_REDIS_SAVE = r"""
local existing = redis.call('HGET', KEYS[1], 'doc')
if existing then
  if existing == ARGV[1] then return {'same', ''} end
  return {'conflict', ''}
end
local head = redis.call('GET', KEYS[2])
if ARGV[4] == '1' and head and head ~= ARGV[5] then return {'stale', head} end
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'workflow_name', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[3])
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
else
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[3])
end
return {'saved', ARGV[3]}
"""

# KEYS: checkpoint hash, head string, ids zset.  ARGV: checkpoint_id, workflow_name.
_REDIS_DELETE = r"""
if redis.call('HGET', KEYS[1], 'workflow_name') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""


def _hash_tag(scope: str) -> str:
    """``scope`` made safe inside a ``{...}`` hash tag (``%``, ``{`` and ``}`` escaped, reversibly)."""
    return scope.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class RedisAgentCheckpointStorage(_AgentCheckpointStorageBase):
    """Agent Framework checkpoints in Redis; every write is one Lua script (atomic, no WATCH loop).

    Keys (``P`` is ``key_prefix``; ``{scope}`` is a hash tag, so a Redis Cluster keeps a scope on one
    slot and the scripts' keys always share it)::

        P{scope}:cp:<checkpoint_id>    hash  doc (JSON text), workflow_name
        P{scope}:head:<workflow_name>  string  the head checkpoint id
        P{scope}:ids:<workflow_name>   zset  checkpoint ids scored by timestamp (microseconds)

    With ``ttl_seconds`` each save sets ``PEXPIRE`` on the checkpoint and refreshes it on the head
    and the id set; ids whose checkpoint expired are skipped (and removed) when listed. A save that
    redis-py retries after its first attempt did reach the server finds its own identical checkpoint
    and succeeds (the idempotent re-save), so reconnect retries are safe.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        scope: str,
        client: aioredis.Redis | None = None,
        key_prefix: str = "af:",
        ttl_seconds: int | None = None,
        allowed_checkpoint_types: Sequence[str] | None = None,
        socket_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        max_connections: int = 64,
        **client_options: Any,
    ) -> None:
        """Connect with ``url`` (``redis://``, ``rediss://`` or ``unix://``, password in the URL) or use
        ``client`` (then the caller owns it and :meth:`close` leaves it open); the pool options are
        hitl's (:class:`hitl_core.checkpoint.RedisCheckpointStorage`)."""
        super().__init__(scope=scope, ttl_seconds=ttl_seconds, allowed_checkpoint_types=allowed_checkpoint_types,
                         clock=time.time)
        if "{" in key_prefix or "}" in key_prefix:
            raise ValueError("key_prefix must not contain '{' or '}': the scope is the keys' hash tag")
        from ..checkpoint.redis import pooled_client

        if client is None:
            if not url:
                raise ValueError("RedisAgentCheckpointStorage needs url= or client=")
            client = pooled_client(url, socket_timeout=socket_timeout, connect_timeout=connect_timeout,
                                   retries=retries, max_connections=max_connections, **client_options)
            self._owns_client = True
        else:
            self._owns_client = False
        self._client = client
        self.key_prefix = key_prefix
        self._base = f"{key_prefix}{{{_hash_tag(scope)}}}:"
        self._save_script = client.register_script(_REDIS_SAVE)
        self._delete_script = client.register_script(_REDIS_DELETE)

    @property
    def client(self) -> aioredis.Redis:
        """The redis-py client (for health checks and tests)."""
        return self._client

    def checkpoint_key(self, checkpoint_id: str) -> str:
        return f"{self._base}cp:{checkpoint_id}"

    def head_key(self, workflow_name: str) -> str:
        return f"{self._base}head:{workflow_name}"

    def ids_key(self, workflow_name: str) -> str:
        return f"{self._base}ids:{workflow_name}"

    async def _save(self, checkpoint: WorkflowCheckpoint, text: str, ts_us: int) -> None:
        workflow = checkpoint.workflow_name
        previous = checkpoint.previous_checkpoint_id
        ttl_ms = self.ttl_seconds * 1000 if self.ttl_seconds else 0
        reply = await self._save_script(
            keys=[self.checkpoint_key(checkpoint.checkpoint_id), self.head_key(workflow), self.ids_key(workflow)],
            args=[text, workflow, checkpoint.checkpoint_id, "1" if previous is not None else "0", previous or "",
                  ttl_ms, ts_us],
        )
        outcome, head = _text(reply[0]), _text(reply[1])
        if outcome == "conflict":
            raise self._conflict(checkpoint)
        if outcome == "stale":
            stale = self._stale_against(checkpoint, head)
            assert stale is not None
            raise stale

    async def _load_text(self, checkpoint_id: str) -> str | bytes | None:
        value: str | bytes | None = await self._client.hget(self.checkpoint_key(checkpoint_id), "doc")
        return value

    async def _live_docs(self, workflow_name: str, ids: list[str]) -> list[tuple[str, str | bytes]]:
        """The documents of ``ids`` still stored, in order; ids whose checkpoint expired are dropped from the set."""
        if not ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for checkpoint_id in ids:
                pipe.hget(self.checkpoint_key(checkpoint_id), "doc")
            docs: list[str | bytes | None] = await pipe.execute()
        gone = [cid for cid, doc in zip(ids, docs, strict=True) if doc is None]
        if gone:
            await self._client.zrem(self.ids_key(workflow_name), *gone)
        return [(cid, doc) for cid, doc in zip(ids, docs, strict=True) if doc is not None]

    async def _list_texts(self, workflow_name: str) -> list[tuple[str, str | bytes]]:
        ids = [_text(m) for m in await self._client.zrange(self.ids_key(workflow_name), 0, -1)]
        return await self._live_docs(workflow_name, ids)

    async def _list_ids(self, workflow_name: str) -> list[str]:
        ids = [_text(m) for m in await self._client.zrange(self.ids_key(workflow_name), 0, -1)]
        if not ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for checkpoint_id in ids:
                pipe.exists(self.checkpoint_key(checkpoint_id))
            present: list[int] = await pipe.execute()
        gone = [cid for cid, n in zip(ids, present, strict=True) if not n]
        if gone:
            await self._client.zrem(self.ids_key(workflow_name), *gone)
        return [cid for cid, n in zip(ids, present, strict=True) if n]

    async def _latest_text(self, workflow_name: str) -> tuple[str, str | bytes] | None:
        head = await self._client.get(self.head_key(workflow_name))
        if head is not None:
            head_id = _text(head)
            doc = await self._load_text(head_id)
            if doc is not None:
                return head_id, doc
        # no head (deleted or expired): the newest checkpoint left
        ids = [_text(m) for m in await self._client.zrange(self.ids_key(workflow_name), 0, -1)]
        live = await self._live_docs(workflow_name, ids)
        return live[-1] if live else None

    async def _delete(self, checkpoint_id: str) -> bool:
        key = self.checkpoint_key(checkpoint_id)
        workflow = await self._client.hget(key, "workflow_name")
        if workflow is None:
            return False
        name = _text(workflow)
        deleted = await self._delete_script(keys=[key, self.head_key(name), self.ids_key(name)],
                                            args=[checkpoint_id, name])
        return int(deleted) == 1

    async def close(self) -> None:
        """Close the connection pool if this storage created the client."""
        if self._owns_client:
            await self._client.aclose()


# -- Cosmos DB ------------------------------------------------------------------------------------
#: Partition key path of the container: the scope is the partition key value.
COSMOS_PARTITION_KEY_PATH = "/scope"
#: Container name :meth:`CosmosAgentCheckpointStorage.from_endpoint` uses by default.
DEFAULT_COSMOS_CONTAINER = "agent-checkpoints"
_KIND_CHECKPOINT = "checkpoint"
_KIND_HEAD = "head"
_MAX_ITEM_ID = 255
# What an item id may not hold (the SDK refuses / \ ? #), ':' (it separates the kind prefix),
# control characters, and '%' itself so that the escape stays reversible.
_ID_ESCAPES = {c: f"%{ord(c):02X}" for c in "%/\\?#:" + "".join(map(chr, range(0x20))) + "\x7f"}
_STAND_IN_MISSING_READ = "Cannot read properties of undefined"
_WRITE_ATTEMPTS = 4


def _item_id(kind: str, value: str) -> str:
    """A Cosmos item id for ``value`` under a kind prefix (``cp:``/``head:``); a digest if it would not fit."""
    escaped = "".join(_ID_ESCAPES.get(c, c) for c in value)
    item_id = f"{kind}:{escaped}"
    if escaped and len(item_id) <= _MAX_ITEM_ID and not escaped.endswith((" ", ".")):
        return item_id
    return f"{kind}:sha256%" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


class _CheckpointExists(Exception):
    """The checkpoint's create found its id taken."""


class _HeadMoved(Exception):
    """The head's conditional write lost to another writer."""


class CosmosAgentCheckpointStorage(ContainerOwner, _AgentCheckpointStorageBase):
    """Agent Framework checkpoints in one Cosmos DB container partitioned by ``/scope``.

    Documents (all in the scope's logical partition; ids escaped like hitl's session ids)::

        {"id": "cp:<checkpoint_id>", "scope": ..., "kind": "checkpoint", "workflow_name": ...,
         "checkpoint_id": ..., "previous_checkpoint_id": ..., "ts_us": ..., "doc": "<JSON text>",
         "expires_at": <epoch s> | null, "ttl": <s>}
        {"id": "head:<workflow_name>", "scope": ..., "kind": "head", "workflow_name": ...,
         "checkpoint_id": <head>, "expires_at": ..., "ttl": ...}

    A save is one point read of the head and one transactional batch: create the checkpoint and
    replace the head with ``If-Match: <its etag>`` (create it when there is none) - atomic, so a lost
    race writes nothing. ``load`` is one point read; listings are one query with
    ``partition_key=scope`` (never cross-partition). The checkpoint is kept as JSON text: Cosmos DB
    reads numbers as doubles, and text keeps every value exact.

    Local stand-in (``stand_in=True``, the default of :meth:`from_endpoint` for a loopback endpoint):
    npm ``@vercel/cosmosdb-server`` answers a read of a missing item with 500 (recognised here as
    "not found") and cannot replace inside a batch, so there the checkpoint is created first and the
    head written after it; a lost head write deletes the checkpoint again (not atomic: between the
    two writes the checkpoint can be loaded by id). It stores ``ttl`` but never expires anything;
    ``expires_at`` keeps expiry exact on it too.
    """

    def __init__(
        self,
        container: ContainerProxy | str = DEFAULT_COSMOS_CONTAINER,
        *,
        scope: str,
        client: CosmosClient | None = None,
        database: str = "hitl",
        create_if_missing: bool = False,
        stand_in: bool = False,
        transactional_batch: bool | None = None,
        ttl_seconds: int | None = None,
        allowed_checkpoint_types: Sequence[str] | None = None,
        clock: Clock = time.time,
        close_client: bool = False,
        credential: Any = None,
    ) -> None:
        """Use an existing ``ContainerProxy``, or ``client=`` and a container name (created on first
        use with ``create_if_missing``: partition key ``/scope``, ``defaultTtl`` -1). ``close_client``
        and ``credential`` say what :meth:`close` closes."""
        super().__init__(scope=scope, ttl_seconds=ttl_seconds, allowed_checkpoint_types=allowed_checkpoint_types,
                         clock=clock)
        # checkpoint and head in one atomic batch (Azure); the stand-in cannot replace inside a batch
        self._own_container(container, client=client, database=database, create_if_missing=create_if_missing,
                            close_client=close_client, credential=credential, stand_in=stand_in,
                            transactional_batch=transactional_batch)

    @classmethod
    def from_endpoint(
        cls,
        endpoint: str,
        *,
        scope: str,
        key: str | None = None,
        credential: Any = None,
        database: str = "hitl",
        container: str = DEFAULT_COSMOS_CONTAINER,
        verify_tls: bool = True,
        stand_in: bool | None = None,
        create_if_missing: bool | None = None,
        transactional_batch: bool | None = None,
        ttl_seconds: int | None = None,
        allowed_checkpoint_types: Sequence[str] | None = None,
        clock: Clock = time.time,
        **client_options: Any,
    ) -> CosmosAgentCheckpointStorage:
        """Connect to an account with ``key``, else ``credential``, else ``DefaultAzureCredential``.

        As :meth:`hitl_core.checkpoint.CosmosDBCheckpointStorage.from_endpoint`: ``stand_in`` and
        ``create_if_missing`` default to True for a loopback endpoint (which also turns endpoint
        discovery off); ``client_options`` go to ``CosmosClient``.
        """
        from ..checkpoint.cosmos import connect

        local = is_loopback_endpoint(endpoint) if stand_in is None else stand_in
        client, owned_credential = connect(endpoint, key=key, credential=credential, verify_tls=verify_tls,
                                           local=local, **client_options)
        return cls(container, scope=scope, client=client, database=database,
                   create_if_missing=local if create_if_missing is None else create_if_missing,
                   stand_in=local, transactional_batch=transactional_batch, ttl_seconds=ttl_seconds,
                   allowed_checkpoint_types=allowed_checkpoint_types, clock=clock, close_client=True,
                   credential=owned_credential)

    @classmethod
    def from_settings(cls, settings: Settings, *, scope: str, container: str = DEFAULT_COSMOS_CONTAINER,
                      **overrides: Any) -> CosmosAgentCheckpointStorage:
        """The account hitl is configured for (``HITL_COSMOS_ENDPOINT``, ``_KEY``, ``_DATABASE``,
        ``_VERIFY_TLS``), with Agent Framework checkpoints in their own ``container``."""
        from ..settings import SettingsError

        if not settings.cosmos_endpoint:
            raise SettingsError("CosmosAgentCheckpointStorage.from_settings needs HITL_COSMOS_ENDPOINT")
        options: dict[str, Any] = {"key": settings.cosmos_key, "database": settings.cosmos_database,
                                   "container": container, "verify_tls": settings.cosmos_verify_tls}
        options.update(overrides)
        return cls.from_endpoint(settings.cosmos_endpoint, scope=scope, **options)

    async def _ready(self) -> ContainerProxy:
        """The container, created on first use if asked (once, even under concurrent callers)."""
        if self._container is not None:
            return self._container
        async with self._init_lock:
            if self._container is None:
                assert self._client is not None
                if self._create_if_missing:
                    from azure.cosmos import PartitionKey

                    database = await self._client.create_database_if_not_exists(self._database_name)
                    self._container = await database.create_container_if_not_exists(
                        id=self._container_name, partition_key=PartitionKey(path=COSMOS_PARTITION_KEY_PATH),
                        default_ttl=-1)
                else:
                    self._container = self._client.get_database_client(self._database_name).get_container_client(
                        self._container_name)
        return self._container

    async def ensure_container(self) -> None:
        """Create (if asked) and resolve the container now rather than on the first call."""
        await self._ready()

    # -- documents ---------------------------------------------------------------------------
    def _is_missing(self, exc: BaseException) -> bool:
        status = _status(exc)
        if status == 404:
            headers = getattr(exc, "headers", None) or {}
            return str(headers.get("x-ms-substatus", "")) != "1003"  # 1003: the container itself is missing
        message = str(getattr(exc, "message", None) or exc)
        return self.stand_in and status == 500 and _STAND_IN_MISSING_READ in message

    def _expired(self, doc: dict[str, Any]) -> bool:
        expires_at = doc.get("expires_at")
        return isinstance(expires_at, (int, float)) and expires_at <= self._clock()

    async def _read(self, item_id: str) -> dict[str, Any] | None:
        """One point read in the scope's partition: the document as stored (expired or not), or None."""
        from azure.core.exceptions import HttpResponseError

        container = await self._ready()
        try:
            doc: dict[str, Any] = await container.read_item(item_id, partition_key=self.scope)
        except HttpResponseError as exc:
            if self._is_missing(exc):
                return None
            raise
        return doc

    async def _read_live(self, item_id: str) -> dict[str, Any] | None:
        doc = await self._read(item_id)
        return None if doc is None or self._expired(doc) else doc

    def _stamp(self, doc: dict[str, Any], now: float) -> dict[str, Any]:
        expires_at = self._expires_at(now)
        doc["expires_at"] = expires_at
        if self.ttl_seconds:
            doc["ttl"] = int(self.ttl_seconds)
        return doc

    async def _query(self, query: str, parameters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A parameterised query in the scope's partition only (and filtered on it: the stand-in
        does not scope ``partition_key=`` queries)."""
        container = await self._ready()
        items = container.query_items(query, parameters=[{"name": "@scope", "value": self.scope}, *parameters],
                                      partition_key=self.scope)
        return [item async for item in items]

    async def _delete_item(self, item_id: str, etag: str | None) -> bool:
        """Delete one document (only if unchanged when ``etag``); False if it was gone or had changed."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        container = await self._ready()
        kwargs: dict[str, Any] = {}
        if etag is not None:
            kwargs = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await container.delete_item(item_id, partition_key=self.scope, **kwargs)
        except HttpResponseError as exc:
            if _status(exc) in (404, 412) or self._is_missing(exc):
                return False
            raise
        return True

    # -- writes ------------------------------------------------------------------------------
    async def _write_batch(self, cp_doc: dict[str, Any], head_doc: dict[str, Any], head_etag: str | None) -> None:
        """Checkpoint create and head write in one transactional batch: both land or neither."""
        from azure.cosmos.exceptions import CosmosBatchOperationError

        container = await self._ready()
        head_op: tuple[Any, ...] = (
            ("replace", (head_doc["id"], head_doc), {"if_match_etag": head_etag}) if head_etag is not None
            else ("create", (head_doc,))
        )
        try:
            await container.execute_item_batch([("create", (cp_doc,)), head_op], partition_key=self.scope)
        except CosmosBatchOperationError as exc:
            index = exc.error_index or 0
            responses = exc.operation_responses or []
            status = responses[index].get("statusCode") if index < len(responses) else _status(exc)
            if index == 0 and status == 409:
                raise _CheckpointExists from exc
            if index == 1 and status in (404, 409, 412):
                raise _HeadMoved from exc
            raise

    async def _write_in_turn(self, cp_doc: dict[str, Any], head_doc: dict[str, Any], head_etag: str | None) -> None:
        """The stand-in's path: create the checkpoint, then write the head; a lost head write takes
        the checkpoint back out."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        container = await self._ready()
        try:
            await container.create_item(cp_doc, no_response=True)
        except HttpResponseError as exc:
            if _status(exc) == 409:
                raise _CheckpointExists from exc
            raise
        try:
            if head_etag is None:
                await container.create_item(head_doc, no_response=True)
            else:
                await container.replace_item(head_doc["id"], head_doc, etag=head_etag,
                                             match_condition=MatchConditions.IfNotModified, no_response=True)
        except BaseException as exc:
            await self._delete_item(cp_doc["id"], None)
            if isinstance(exc, HttpResponseError) and _status(exc) in (404, 409, 412):
                raise _HeadMoved from exc
            raise

    async def _save(self, checkpoint: WorkflowCheckpoint, text: str, ts_us: int) -> None:
        cid, workflow = checkpoint.checkpoint_id, checkpoint.workflow_name
        cp_id, head_id = _item_id("cp", cid), _item_id("head", workflow)
        write = self._write_batch if self.transactional_batch else self._write_in_turn
        for _ in range(_WRITE_ATTEMPTS):
            head_raw = await self._read(head_id)
            head_live = head_raw if head_raw is not None and not self._expired(head_raw) else None
            head = str(head_live["checkpoint_id"]) if head_live is not None else None
            stale = self._stale_against(checkpoint, head)
            if stale is not None:
                if await self._same_stored(checkpoint, cp_id, text):
                    return
                raise stale
            now = self._clock()
            cp_doc = self._stamp({"id": cp_id, "scope": self.scope, "kind": _KIND_CHECKPOINT, "workflow_name": workflow,
                                  "checkpoint_id": cid, "previous_checkpoint_id": checkpoint.previous_checkpoint_id,
                                  "ts_us": ts_us, "doc": text}, now)
            head_doc = self._stamp({"id": head_id, "scope": self.scope, "kind": _KIND_HEAD, "workflow_name": workflow,
                                    "checkpoint_id": cid}, now)
            try:
                await write(cp_doc, head_doc, str(head_raw["_etag"]) if head_raw is not None else None)
                return
            except _CheckpointExists:
                if await self._same_stored(checkpoint, cp_id, text):
                    return
                # an expired copy Cosmos has not deleted yet is taken out; then try again
            except _HeadMoved:
                pass  # another writer moved the head: read it again (the rule decides)
        raise WorkflowCheckpointException(
            f"checkpoint {cid!r} of workflow {workflow!r} in scope {self.scope!r} was not saved: its head kept "
            f"changing under {_WRITE_ATTEMPTS} attempts")

    async def _same_stored(self, checkpoint: WorkflowCheckpoint, cp_id: str, text: str) -> bool:
        """True if this exact checkpoint is stored (an idempotent re-save); CheckpointConflictError if
        its id holds other content. An expired leftover is deleted and counts as absent."""
        existing = await self._read(cp_id)
        if existing is None:
            return False
        if self._expired(existing):
            await self._delete_item(cp_id, str(existing["_etag"]))
            return False
        if existing.get("doc") == text and existing.get("workflow_name") == checkpoint.workflow_name:
            return True
        raise self._conflict(checkpoint)

    # -- reads -------------------------------------------------------------------------------
    async def _load_text(self, checkpoint_id: str) -> str | None:
        doc = await self._read_live(_item_id("cp", checkpoint_id))
        return None if doc is None else str(doc["doc"])

    async def _listed(self, workflow_name: str, fields: str) -> list[dict[str, Any]]:
        rows = await self._query(
            f"SELECT {fields} FROM c WHERE c.scope = @scope AND c.kind = @kind AND c.workflow_name = @workflow",  # noqa: S608 - fixed field lists
            [{"name": "@kind", "value": _KIND_CHECKPOINT}, {"name": "@workflow", "value": workflow_name}])
        live = [r for r in rows if not self._expired(r)]
        live.sort(key=lambda r: (int(r["ts_us"]), str(r["checkpoint_id"])))
        return live

    async def _list_texts(self, workflow_name: str) -> list[tuple[str, str | bytes]]:
        rows = await self._listed(workflow_name, "c.checkpoint_id, c.ts_us, c.expires_at, c.doc")
        return [(str(r["checkpoint_id"]), str(r["doc"])) for r in rows]

    async def _list_ids(self, workflow_name: str) -> list[str]:
        rows = await self._listed(workflow_name, "c.checkpoint_id, c.ts_us, c.expires_at")
        return [str(r["checkpoint_id"]) for r in rows]

    async def _latest_text(self, workflow_name: str) -> tuple[str, str | bytes] | None:
        head = await self._read_live(_item_id("head", workflow_name))
        if head is not None:
            head_cid = str(head["checkpoint_id"])
            text = await self._load_text(head_cid)
            if text is not None:
                return head_cid, text
        texts = await self._list_texts(workflow_name)  # no head (deleted or expired): the newest left
        return texts[-1] if texts else None

    async def _delete(self, checkpoint_id: str) -> bool:
        cp_id = _item_id("cp", checkpoint_id)
        existing = await self._read(cp_id)
        if existing is None:
            return False
        live = not self._expired(existing)
        if not await self._delete_item(cp_id, None):
            return False
        head_id = _item_id("head", str(existing["workflow_name"]))
        head = await self._read(head_id)
        if head is not None and head.get("checkpoint_id") == checkpoint_id:
            await self._delete_item(head_id, str(head["_etag"]))  # lost to a newer head: that one stays
        return live



if TYPE_CHECKING:  # mypy proves that each class is an Agent Framework CheckpointStorage
    def _conforms(sqlite: SqliteAgentCheckpointStorage, redis: RedisAgentCheckpointStorage,
                  cosmos: CosmosAgentCheckpointStorage) -> list[CheckpointStorage]:
        return [sqlite, redis, cosmos]


__all__ = [
    "COSMOS_PARTITION_KEY_PATH",
    "DEFAULT_COSMOS_CONTAINER",
    "CheckpointConflictError",
    "CosmosAgentCheckpointStorage",
    "RedisAgentCheckpointStorage",
    "SqliteAgentCheckpointStorage",
    "StaleCheckpointError",
    "StaleCheckpointGuard",
    "abort_on_stale_checkpoint",
]
