"""A local Event Grid topic: accepts what the real publisher sends, delivers like Event Grid does.

No Event Grid simulator runs on a developer machine, but the real
``azure.eventgrid.aio.EventGridPublisherClient`` publishes to any http(s) endpoint. So the devhost
serves a topic on its own HTTP server::

    POST http://127.0.0.1:{port}/runtime/eventgrid/topics/{topic}/api/events?api-version=2018-01-01
    aeg-sas-key: <the topic key>
    content-type: application/cloudevents-batch+json; charset=utf-8
    [ {CloudEvent 1.0}, ... ]

(``application/cloudevents+json`` with a single event object is accepted too.) The app is pointed
at it with ``HITL_EVENTGRID_TOPIC_ENDPOINT`` (the whole URL above without the query) and
``HITL_EVENTGRID_TOPIC_KEY``. Any ``{topic}`` name is accepted and every Event Grid trigger
function of the app is subscribed to every local topic, the way one subscription per function
would be set up in Azure.

Behaviour that mirrors the service, because the app must be written for it:

* the key is checked (``401`` otherwise, nothing stored); the envelope is validated with the
  CloudEvents 1.0 rules Event Grid enforces (``400`` with the reason); a batch over 1 MiB is
  ``413``; the answer is ``200`` with an empty body as soon as the batch is **persisted** — delivery
  is asynchronous;
* each (event, subscriber function) pair is one delivery with its own retries and exponential
  back-off when the function raises (:class:`RetryPolicy`); after the last attempt it is counted
  as failed (dead-lettered) and logged;
* delivery is at-least-once: the queue lives in SQLite (``{data_dir}/eventgrid.db``) and whatever
  was accepted but not yet delivered — also a delivery cut short by a shutdown — is redelivered
  when the host starts again. Consumers must de-duplicate by event ``id``, as in Azure.

This module knows nothing about ``azure.functions``: the host passes a ``deliver(function_name,
event)`` callback that builds the trigger argument and calls the user function.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hmac
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from .eventgrid_filters import deliveries, parse_filters

__all__ = [
    "MAX_BATCH_BYTES",
    "TOPIC_ROUTE",
    "CloudEventEnvelope",
    "DeliverCallback",
    "LocalEventGridTopic",
    "RetryPolicy",
    "load_or_create_topic_key",
    "topic_url",
]

log = logging.getLogger("hitl.devhost.eventgrid")

TOPIC_ROUTE = "/runtime/eventgrid/topics/{topic}/api/events"
"""The aiohttp route of the local topic (``{topic}``: 1-128 letters, digits, ``-`` or ``_``)."""

MAX_BATCH_BYTES = 1024 * 1024
"""Event Grid's limit for one publish request (and one event)."""

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_CLOUDEVENT_BATCH = "application/cloudevents-batch+json"
_CLOUDEVENT_SINGLE = "application/cloudevents+json"

DeliverCallback = Callable[[str, dict[str, Any]], Awaitable[None]]
"""``deliver(function_name, event_json)``: raise to make the delivery fail (and be retried)."""


def topic_url(base_url: str, topic: str = "local") -> str:
    """The endpoint to configure the publisher with, e.g. ``http://127.0.0.1:7071/runtime/...``."""
    return base_url.rstrip("/") + TOPIC_ROUTE.format(topic=topic)


def load_or_create_topic_key(data_dir: Path) -> str:
    """The local topic's access key: random, created once per data dir, file mode 0600.

    Per data dir (not per process) so an app that cached the key, or a second process using the
    same ``HITL_DATA_DIR``, keeps publishing after a restart.
    """
    path = data_dir / "eventgrid-topic.key"
    if path.exists():
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key
    data_dir.mkdir(parents=True, exist_ok=True)
    key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    path.write_text(key + "\n", encoding="utf-8")
    with contextlib.suppress(OSError):
        path.chmod(0o600)
    return key


class CloudEventEnvelope(BaseModel):
    """The CloudEvents 1.0 envelope as Event Grid validates it on publish.

    Extension attributes are allowed (lower-case letters and digits, at most 20 characters, as the
    CloudEvents spec asks); ``data`` and ``data_base64`` are mutually exclusive; ``time`` must be
    an RFC 3339 timestamp with an offset.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Annotated[str, Field(min_length=1)]
    source: Annotated[str, Field(min_length=1)]
    type: Annotated[str, Field(min_length=1)]
    specversion: Literal["1.0"]
    subject: str | None = None
    time: AwareDatetime | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    data: Any = None
    data_base64: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> CloudEventEnvelope:
        if "data" in self.model_fields_set and "data_base64" in self.model_fields_set:
            raise ValueError("an event carries either 'data' or 'data_base64', not both")
        if self.data_base64 is not None:
            try:
                base64.b64decode(self.data_base64, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("'data_base64' is not valid base64") from None
        for name in self.model_extra or {}:
            if not _EXTENSION_NAME.match(name):
                raise ValueError(f"extension attribute {name!r} must be 1-20 lower-case letters or digits")
        return self


_BATCH = TypeAdapter(list[CloudEventEnvelope])


@dataclass(frozen=True)
class RetryPolicy:
    """How failed deliveries are retried: ``initial_delay * multiplier**(n-1)`` capped at ``max_delay``.

    Azure retries for up to 24 h (30 attempts, 10 s, 30 s, 1 min, ...). The local defaults start
    fast (a developer sees a transient failure heal within a second) but keep trying for about
    ten minutes — longer than a notification claim's lease and a short SMTP or storage outage —
    because an event given up on here is a reviewer never notified.
    """

    max_attempts: int = 30
    initial_delay: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.multiplier < 1 or self.max_delay < 0:
            raise ValueError("delays must be non-negative and the multiplier at least 1")

    def delay(self, attempts_made: int) -> float:
        """Seconds to wait after ``attempts_made`` failed attempts (1 -> ``initial_delay``)."""
        return float(min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempts_made - 1)))


@dataclass(frozen=True)
class _Delivery:
    seq: int
    topic: str
    function: str
    event_id: str
    event: dict[str, Any]
    attempts: int


class _DeliveryStore:
    """The SQLite delivery queue. One connection, serialised by a lock, used from worker threads."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        function TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_json TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        accepted_at REAL NOT NULL,
        finished_at REAL,
        last_error TEXT
    );
    CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt);
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(self._SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def enqueue(self, topic: str, pairs: Sequence[tuple[dict[str, Any], str]], now: float) -> None:
        """One delivery row per (event, subscribed function) pair."""
        rows = [(topic, fn, str(ev["id"]), json.dumps(ev, ensure_ascii=False), now, now) for ev, fn in pairs]
        if not rows:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO deliveries (topic, function, event_id, event_json, next_attempt, accepted_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def due(self, now: float, limit: int, exclude: set[int]) -> list[_Delivery]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, topic, function, event_id, event_json, attempts FROM deliveries"
                " WHERE status = 'pending' AND next_attempt <= ? ORDER BY next_attempt, seq LIMIT ?",
                (now, limit + len(exclude))).fetchall()
        return [_Delivery(seq, topic, fn, eid, json.loads(body), attempts)
                for seq, topic, fn, eid, body, attempts in rows if seq not in exclude][:limit]

    def next_due(self, exclude: set[int]) -> float | None:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, next_attempt FROM deliveries WHERE status = 'pending'"
                " ORDER BY next_attempt LIMIT ?", (len(exclude) + 1,)).fetchall()
        for seq, at in rows:
            if seq not in exclude:
                return float(at)
        return None

    def finish(self, seq: int, status: Literal["delivered", "failed"], attempts: int, now: float,
               error: str | None) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE deliveries SET status = ?, attempts = ?, finished_at = ?, last_error = ? WHERE seq = ?",
                (status, attempts, now, error, seq))

    def retry(self, seq: int, attempts: int, next_attempt: float, error: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE deliveries SET attempts = ?, next_attempt = ?, last_error = ? WHERE seq = ?",
                (attempts, next_attempt, error, seq))

    def abandon_unknown(self, functions: Sequence[str], now: float) -> int:
        """Fail pending deliveries whose function is no longer in the app (its subscription is gone)."""
        marks = ",".join("?" for _ in functions) or "''"
        with self._lock:
            cur = self._conn.execute(
                f"UPDATE deliveries SET status = 'failed', finished_at = ?, "  # noqa: S608 - placeholders only
                f"last_error = 'the function is no longer in the app' "
                f"WHERE status = 'pending' AND function NOT IN ({marks})", (now, *functions))
            return int(cur.rowcount)

    def make_due(self, now: float) -> None:
        """After a restart the host was down: pending retries are due now rather than later."""
        with self._lock:
            self._conn.execute("UPDATE deliveries SET next_attempt = ? WHERE status = 'pending' AND next_attempt > ?",
                               (now, now))

    def prune(self, older_than: float) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM deliveries WHERE status != 'pending' AND finished_at < ?", (older_than,))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            per_fn = self._conn.execute(
                "SELECT function, status, COUNT(*), COALESCE(SUM(attempts), 0) FROM deliveries"
                " GROUP BY function, status").fetchall()
            events = self._conn.execute("SELECT COUNT(DISTINCT topic || '/' || event_id) FROM deliveries").fetchone()
            failures = self._conn.execute(
                "SELECT function, event_id, attempts, last_error FROM deliveries WHERE status = 'failed'"
                " ORDER BY finished_at DESC LIMIT 20").fetchall()
        totals = {"delivered": 0, "failed": 0, "pending": 0, "attempts": 0}
        functions: dict[str, dict[str, int]] = {}
        for fn, status, count, attempts in per_fn:
            entry = functions.setdefault(fn, {"delivered": 0, "failed": 0, "pending": 0, "attempts": 0})
            entry[status] = entry.get(status, 0) + int(count)
            entry["attempts"] += int(attempts)
            totals[status] = totals.get(status, 0) + int(count)
            totals["attempts"] += int(attempts)
        return {
            **totals,
            "events": int(events[0]) if events else 0,
            "functions": functions,
            "recent_failures": [
                {"function": fn, "event_id": eid, "attempts": attempts, "error": err}
                for fn, eid, attempts, err in failures
            ],
        }


def _error(status: int, code: str, message: str) -> web.Response:
    """Event Grid's error body shape: ``{"error": {"code", "message"}}``."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class LocalEventGridTopic:
    """The publish endpoint plus the delivery loop.

    ``subscribers`` are the Event Grid trigger function names; ``deliver`` invokes one of them with
    one event. Use :meth:`add_routes` to mount the endpoint, then :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        *,
        db_path: Path,
        key: str,
        subscribers: Sequence[str],
        deliver: DeliverCallback,
        retry: RetryPolicy | None = None,
        concurrency: int = 8,
        delivery_timeout: float | None = 300.0,
        keep_finished_seconds: float = 7 * 24 * 3600,
        filters: Mapping[str, Collection[str] | Mapping[str, Any] | None] | None = None,
    ) -> None:
        if not key:
            raise ValueError("the local Event Grid topic needs a non-empty key")
        self._key = key.encode("utf-8")
        self._subscribers = tuple(subscribers)
        #: function -> what its subscription lets through (a function not named: every event; None: none).
        self._filters = parse_filters(filters)
        self._deliver = deliver
        self.retry = retry or RetryPolicy()
        self._store = _DeliveryStore(db_path)
        self._concurrency = max(1, concurrency)
        self._timeout = delivery_timeout
        self._keep_finished = keep_finished_seconds
        self._wake = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self.rejected = 0

    @property
    def subscribers(self) -> tuple[str, ...]:
        """The Event Grid trigger functions every event is delivered to."""
        return self._subscribers

    def add_routes(self, app: web.Application) -> None:
        """Mount ``POST /runtime/eventgrid/topics/{topic}/api/events``."""
        app.router.add_post(TOPIC_ROUTE, self.handle_publish)

    # -- publish ---------------------------------------------------------------------------

    async def handle_publish(self, request: web.Request) -> web.Response:
        """Validate, persist, answer 200; delivery happens later on the dispatcher."""
        topic = request.match_info.get("topic", "")
        if not _TOPIC_NAME.match(topic):
            return _error(404, "NotFound", f"unknown topic {topic!r}")
        supplied = request.headers.get("aeg-sas-key", "").encode("utf-8")
        if not supplied or not hmac.compare_digest(supplied, self._key):
            self.rejected += 1
            reason = ("the request has no aeg-sas-key header" if not supplied
                      else "the aeg-sas-key header does not match the topic key")
            return _error(401, "Unauthorized", reason + " (only key authentication is supported locally)")
        if self._closed:
            return _error(503, "ServiceUnavailable", "the local topic is shutting down")
        content_type = request.content_type.lower()
        if content_type not in (_CLOUDEVENT_BATCH, _CLOUDEVENT_SINGLE):
            return _error(415, "UnsupportedMediaType",
                          f"this local topic uses the CloudEvents 1.0 schema; content type {content_type!r} "
                          f"is not {_CLOUDEVENT_BATCH} or {_CLOUDEVENT_SINGLE}")
        if request.content_length is not None and request.content_length > MAX_BATCH_BYTES:
            return _error(413, "RequestEntityTooLarge", f"a publish request is limited to {MAX_BATCH_BYTES} bytes")
        body = await request.read()
        if len(body) > MAX_BATCH_BYTES:
            return _error(413, "RequestEntityTooLarge", f"a publish request is limited to {MAX_BATCH_BYTES} bytes")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, "BadRequest", f"the body is not JSON: {exc}")
        if content_type == _CLOUDEVENT_SINGLE:
            payload = [payload]
        if not isinstance(payload, list) or not payload:
            return _error(400, "BadRequest", "a CloudEvents batch is a non-empty JSON array of events")
        try:
            _BATCH.validate_python(payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"event {err['loc'][0] if err['loc'] else '?'}"
                f"{'.' + '.'.join(str(p) for p in err['loc'][1:]) if len(err['loc']) > 1 else ''}: {err['msg']}"
                for err in exc.errors(include_url=False))
            return _error(400, "BadRequest", f"invalid CloudEvent: {problems}")
        events: list[dict[str, Any]] = payload
        pairs = deliveries(events, self._subscribers, self._filters)
        await asyncio.to_thread(self._store.enqueue, topic, pairs, time.time())
        self._wake.set()
        log.debug("accepted %d event(s) on topic %s for %d subscriber(s)", len(events), topic, len(self._subscribers))
        return web.Response(status=200)

    # -- delivery --------------------------------------------------------------------------

    async def start(self) -> None:
        """Fail deliveries to vanished functions, prune old rows, start the dispatcher."""
        now = time.time()
        abandoned = await asyncio.to_thread(self._store.abandon_unknown, self._subscribers, now)
        if abandoned:
            log.warning("%d pending event delivery(ies) target functions no longer in the app", abandoned)
        await asyncio.to_thread(self._store.prune, now - self._keep_finished)
        await asyncio.to_thread(self._store.make_due, now)
        pending = (await self.stats())["pending"]
        if pending:
            log.info("redelivering %d pending event delivery(ies) from the previous run", pending)
        self._stopping = False
        self._loop_task = asyncio.create_task(self._dispatch(), name="hitl-devhost-eventgrid")

    async def stop(self, grace: float = 5.0) -> None:
        """:meth:`stop_dispatch` then :meth:`close`."""
        await self.stop_dispatch(grace)
        await self.close()

    async def stop_dispatch(self, grace: float = 5.0) -> None:
        """Stop dispatching; let running deliveries finish for ``grace`` s, then cancel them.

        A cancelled delivery stays pending in SQLite and is redelivered on the next start. The
        publish endpoint keeps accepting (and persisting) until :meth:`close`, so requests the
        host lets finish during shutdown do not lose their events.
        """
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        running = list(self._inflight.values())
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def close(self) -> None:
        """Close the queue (idempotent); publishing answers 503 from now on."""
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._store.close)

    async def stats(self) -> dict[str, Any]:
        """Counts for ``GET /api/_dev/eventgrid`` (over the data dir's lifetime, minus pruned rows)."""
        stats = await asyncio.to_thread(self._store.stats)
        stats["subscribers"] = list(self._subscribers)
        stats["in_flight"] = len(self._inflight)
        stats["rejected_publishes"] = self.rejected
        stats["retry"] = {"max_attempts": self.retry.max_attempts, "initial_delay": self.retry.initial_delay,
                          "multiplier": self.retry.multiplier, "max_delay": self.retry.max_delay}
        return stats

    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            free = self._concurrency - len(self._inflight)
            if free > 0:
                exclude = set(self._inflight)
                for item in await asyncio.to_thread(self._store.due, time.time(), free, exclude):
                    task = asyncio.create_task(self._attempt(item), name=f"hitl-eventgrid-{item.seq}")
                    self._inflight[item.seq] = task
                    task.add_done_callback(functools.partial(self._done, item.seq))
            timeout = 1.0
            if len(self._inflight) < self._concurrency:
                next_at = await asyncio.to_thread(self._store.next_due, set(self._inflight))
                if next_at is not None:
                    timeout = max(0.0, min(timeout, next_at - time.time()))
            if timeout > 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)

    def _done(self, seq: int, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(seq, None)
        self._wake.set()

    async def _attempt(self, item: _Delivery) -> None:
        attempts = item.attempts + 1
        try:
            if self._timeout is None:
                await self._deliver(item.function, item.event)
            else:
                await asyncio.wait_for(self._deliver(item.function, item.event), self._timeout)
        except asyncio.CancelledError:
            raise  # shutdown: stays pending, redelivered on restart
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            now = time.time()
            if attempts >= self.retry.max_attempts:
                log.error("event %s -> %s failed after %d attempt(s), dropped: %s",
                          item.event_id, item.function, attempts, error)
                await asyncio.to_thread(self._store.finish, item.seq, "failed", attempts, now, error)
            else:
                delay = self.retry.delay(attempts)
                log.warning("event %s -> %s failed (attempt %d/%d), retrying in %.2fs: %s",
                            item.event_id, item.function, attempts, self.retry.max_attempts, delay, error)
                await asyncio.to_thread(self._store.retry, item.seq, attempts, now + delay, error)
            return
        await asyncio.to_thread(self._store.finish, item.seq, "delivered", attempts, time.time(), None)
        log.debug("event %s -> %s delivered (attempt %d)", item.event_id, item.function, attempts)
