"""De-duplication of Event Grid's at-least-once deliveries.

Why claim / confirm / release rather than a plain "seen" set:

* ``claim(key, ttl)`` is atomic (one winner among concurrent deliveries of the same event)
  and is taken *before* sending, so two concurrent copies never both send.
* The dispatcher claims with a short *lease*; if the process dies mid-send the lease expires
  and Event Grid's redelivery can send after all (otherwise a crash would silently lose the
  notification: at-most-once).
* ``confirm(key, ttl)`` after a successful send keeps the key for the long de-duplication
  window (longer than Event Grid's 24 h retry period).
* ``release(key)`` after a failed send lets the redelivery try again at once.
* ``is_confirmed(key)`` tells a key that was *sent* from one whose claim is still open, so a
  redelivery that finds a claim open (another delivery in flight, or one whose process died)
  asks to be retried instead of reporting a duplicate — dropping it would lose the notification.

Keys are opaque strings (the dispatcher uses ``"{channel}:{event id}"``). Implementations:
:class:`InMemoryDedupStore` (one process; tests and single-instance dev), :class:`SqliteDedupStore`
(one machine, survives restarts), :class:`RedisDedupStore` (shared by all instances).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import StorageUnavailableError

Clock = Callable[[], float]


@runtime_checkable
class DedupStore(Protocol):
    """Remembers which event ids (or ``channel:event id`` keys) were handled."""

    async def claim(self, event_id: str, ttl_seconds: int) -> bool:
        """Atomically take ``event_id`` for ``ttl_seconds``: True the first time, False while taken."""
        ...

    async def release(self, event_id: str) -> None:
        """Forget ``event_id`` so that a redelivery can claim it again (after a failed send)."""
        ...

    async def confirm(self, event_id: str, ttl_seconds: int) -> None:
        """Keep ``event_id`` taken for ``ttl_seconds`` from now (after a successful send)."""
        ...

    async def is_confirmed(self, event_id: str) -> bool:
        """True if ``event_id`` was confirmed (sent), False if free or only claimed."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...


class InMemoryDedupStore:
    """Keys in a dict with expiry times; for one process (tests, a single dev host).

    Safe under asyncio concurrency because no method awaits between reading and writing.
    """

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._expires: dict[str, float] = {}
        self._confirmed: set[str] = set()

    async def claim(self, event_id: str, ttl_seconds: int) -> bool:
        now = self._clock()
        expires = self._expires.get(event_id)
        if expires is not None and expires > now:
            return False
        if len(self._expires) > 10_000:
            self._purge(now)
        self._expires[event_id] = now + ttl_seconds
        self._confirmed.discard(event_id)
        return True

    async def release(self, event_id: str) -> None:
        self._expires.pop(event_id, None)
        self._confirmed.discard(event_id)

    async def confirm(self, event_id: str, ttl_seconds: int) -> None:
        self._expires[event_id] = self._clock() + ttl_seconds
        self._confirmed.add(event_id)

    async def is_confirmed(self, event_id: str) -> bool:
        expires = self._expires.get(event_id)
        return event_id in self._confirmed and expires is not None and expires > self._clock()

    async def close(self) -> None:
        """Nothing to close; present so every store can be closed the same way."""

    def _purge(self, now: float) -> None:
        for key in [k for k, v in self._expires.items() if v <= now]:
            del self._expires[key]
            self._confirmed.discard(key)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_dedup (
    key        TEXT PRIMARY KEY,
    expires_at REAL NOT NULL,
    sent       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notify_dedup_expiry ON notify_dedup(expires_at);
"""

# One statement, so the check and the write are atomic even across processes sharing the file:
# insert, or take over a row whose claim has expired; rowcount says whether we won.
_CLAIM = """
INSERT INTO notify_dedup(key, expires_at, sent) VALUES (?, ?, 0)
ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at, sent = 0
WHERE notify_dedup.expires_at <= ?
"""

_PURGE_EVERY = 256


class SqliteDedupStore:
    """Keys in a SQLite table; survives restarts, shared by processes on one machine.

    Uses wall-clock time (expiry must mean the same after a restart). Statements run on the
    event loop like :class:`~hitl_core.checkpoint.sqlite.SqliteCheckpointStorage`: each is one
    small autocommit write in WAL mode, cheaper than a thread hop. Every statement is
    parameterised.
    """

    def __init__(self, path: str | Path, *, clock: Clock = time.time, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._clock = clock
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"cannot open dedup database {self.path}: {exc}") from None
        self._claims = 0

    async def claim(self, event_id: str, ttl_seconds: int) -> bool:
        now = self._clock()
        db = self._conn()
        try:
            cursor = db.execute(_CLAIM, (event_id, now + ttl_seconds, now))
            won = cursor.rowcount == 1
            self._claims += 1
            if self._claims % _PURGE_EVERY == 0:
                db.execute("DELETE FROM notify_dedup WHERE expires_at <= ?", (now,))
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"dedup database {self.path}: {exc}") from None
        return won

    async def release(self, event_id: str) -> None:
        try:
            self._conn().execute("DELETE FROM notify_dedup WHERE key = ?", (event_id,))
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"dedup database {self.path}: {exc}") from None

    async def confirm(self, event_id: str, ttl_seconds: int) -> None:
        try:
            self._conn().execute(
                "INSERT INTO notify_dedup(key, expires_at, sent) VALUES (?, ?, 1) "
                "ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at, sent = 1",
                (event_id, self._clock() + ttl_seconds),
            )
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"dedup database {self.path}: {exc}") from None

    async def is_confirmed(self, event_id: str) -> bool:
        try:
            row = self._conn().execute(
                "SELECT sent FROM notify_dedup WHERE key = ? AND expires_at > ?", (event_id, self._clock())
            ).fetchone()
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"dedup database {self.path}: {exc}") from None
        return bool(row and row[0])

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageUnavailableError(f"dedup database {self.path} is closed")
        return self._db


class RedisDedupStore:
    """Keys in Redis (``SET key NX EX ttl``): shared by every Function instance.

    Pass a ``redis://``/``rediss://`` ``url`` (a client is created and owned) or an existing
    ``redis.asyncio`` ``client`` (not closed by :meth:`close`). ``redis`` is imported only here,
    so importing :mod:`hitl_core.notify` does not need it.
    """

    def __init__(self, url: str | None = None, *, client: Any = None, prefix: str = "hitl:notify:dedup:") -> None:
        if (url is None) == (client is None):
            raise ValueError("pass exactly one of url or client")
        if url is not None:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(url)
            self._owns_client = True
        else:
            self._owns_client = False
        self._client: Any = client
        self.prefix = prefix

    async def claim(self, event_id: str, ttl_seconds: int) -> bool:
        async with self._errors():
            return bool(await self._client.set(self.prefix + event_id, b"claimed", nx=True,
                                               ex=max(int(ttl_seconds), 1)))

    async def release(self, event_id: str) -> None:
        async with self._errors():
            await self._client.delete(self.prefix + event_id)

    async def confirm(self, event_id: str, ttl_seconds: int) -> None:
        async with self._errors():
            await self._client.set(self.prefix + event_id, b"sent", ex=max(int(ttl_seconds), 1))

    async def is_confirmed(self, event_id: str) -> bool:
        async with self._errors():
            return bool(await self._client.get(self.prefix + event_id) == b"sent")

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _errors(self) -> _RedisErrors:
        return _RedisErrors()


class _RedisErrors:
    """Translate redis-py errors into :class:`StorageUnavailableError` (the project's error tree)."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        import redis.exceptions

        if isinstance(exc, redis.exceptions.RedisError):
            raise StorageUnavailableError(f"redis dedup store unavailable: {type(exc).__name__}: {exc}") from None
