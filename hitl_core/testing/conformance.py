"""The storage conformance suite: behaviour every :class:`CheckpointStorage` backend must show.

Why a shared suite: the service is written against the protocol, not a backend, so each
backend must give the same answers for the same calls — create-only writes, version
conflicts, TTLs, the inbox's order and paging, audit atomicity, the size guard, the votes and
claims of approval policies, and out-of-office delegations (:class:`DelegationStorage`: their
conditional writes, listing by delegate, expiry at ``ends_at``). Writing those
expectations once and running them against every backend is what keeps a new backend (Redis,
Cosmos DB, ...) honest.

The suite is plain async Python (no pytest import): each check is ``async def check_x(backend)``
taking a :class:`Backend` — a fresh, empty storage plus the few knobs a check needs (how to make
time pass, how to read a stored TTL). :data:`CHECKS` lists them all; :func:`run_conformance`
runs them outside pytest. With pytest, parametrize over :data:`CHECKS` and a fixture that
yields a fresh :class:`Backend`::

    @pytest.mark.parametrize("check", CHECKS, ids=check_id)
    async def test_conformance(backend: Backend, check: Check) -> None:
        await check(backend)

Every check raises :class:`ConformanceError` (an ``AssertionError``) with a message naming the
expectation that failed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..checkpoint.base import (
    MAX_INBOX_ASSIGNEES,
    CheckpointStorage,
    DelegationStorage,
    InvalidContinuationError,
    encode_token,
)
from ..checkpoint.models import (
    AuditRecord,
    Decision,
    Delegation,
    Page,
    PendingRequest,
    PendingRequestEntry,
    SessionSummary,
    StoredCheckpoint,
    StoredDelegation,
    WorkflowCheckpoint,
)
from ..errors import CheckpointTooLargeError, ConcurrencyError, StorageError

__all__ = [
    "CHECKS",
    "Backend",
    "BackendFactory",
    "Check",
    "ConformanceError",
    "ManualClock",
    "check_id",
    "make_audit",
    "make_checkpoint",
    "make_delegation",
    "make_request",
    "run_conformance",
]

T0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
"""A fixed instant the test data is built around (whole second: ISO text has no fraction)."""


class ConformanceError(AssertionError):
    """A backend does not behave as the protocol requires."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)




async def expect_raises[E: BaseException](kind: type[E], awaitable: Awaitable[Any], what: str) -> E:
    """Await ``awaitable`` and return the ``kind`` error it must raise."""
    try:
        result = await awaitable
    except kind as exc:
        return exc
    except BaseException as exc:
        raise ConformanceError(f"{what}: expected {kind.__name__}, got {type(exc).__name__}: {exc}") from exc
    raise ConformanceError(f"{what}: expected {kind.__name__}, but it returned {result!r:.200}")


class ManualClock:
    """A clock a test moves by hand; pass it as ``clock=`` to backends that accept one."""

    def __init__(self, start: float = 1_900_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """A fresh, empty storage under test and how the checks can steer time around it.

    ``clock``: the :class:`ManualClock` the storage reads (``advance`` then moves it).
    ``real_expiry``: the storage expires data on the server's own clock (Redis), so ``advance``
    sleeps for real — keep TTLs in checks short. ``ttl_probe(session_id)``: the TTL (seconds)
    the backend stored for a session, or None, for backends whose test server never expires
    anything (the Cosmos DB stand-in); the TTL checks then assert the stored TTL instead.
    ``second_storage``: builds another storage over the same data (another process's view),
    for backends where that is possible; the concurrency check then writes through both.
    ``concurrent_writers``: how many saves the concurrency check races (lower it for a slow server).
    """

    name: str
    storage: CheckpointStorage
    clock: ManualClock | None = None
    real_expiry: bool = False
    ttl_probe: Callable[[str], Awaitable[float | None]] | None = None
    second_storage: Callable[[], Awaitable[CheckpointStorage]] | None = None
    concurrent_writers: int = 50

    @property
    def can_expire(self) -> bool:
        return self.clock is not None or self.real_expiry

    async def advance(self, seconds: float) -> None:
        """Make ``seconds`` pass for the storage's TTLs."""
        if self.clock is not None:
            self.clock.advance(seconds)
        elif self.real_expiry:
            await asyncio.sleep(seconds)
        else:
            raise ConformanceError(f"backend {self.name!r} cannot make time pass (no clock, no real expiry)")


Check = Callable[[Backend], Awaitable[None]]
BackendFactory = Callable[[], AbstractAsyncContextManager[Backend]]
"""Yields a fresh :class:`Backend` and cleans up after it (used by :func:`run_conformance`)."""

CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def check_id(fn: Check) -> str:
    """A short test id for a check (``round_trip`` for ``check_round_trip``)."""
    name = getattr(fn, "__name__", repr(fn))
    return name.removeprefix("check_")


async def run_conformance(factory: BackendFactory, checks: Sequence[Check] | None = None
                          ) -> dict[str, BaseException | None]:
    """Run checks outside pytest, each on a fresh backend; maps check id -> failure (None: passed)."""
    results: dict[str, BaseException | None] = {}
    for fn in checks if checks is not None else CHECKS:
        try:
            async with factory() as backend:
                await fn(backend)
        except Exception as exc:
            results[check_id(fn)] = exc
        else:
            results[check_id(fn)] = None
    return results


# -- test data ----------------------------------------------------------------------------------
def make_request(call_id: str, *, created_at: dt.datetime = T0, approvers: Sequence[str] = (),
                 data: Any = None, deadline: dt.datetime | None = None) -> PendingRequest:
    """A pending request as the engine would store it (the encoded RequestInfoMessage in ``request``)."""
    return PendingRequest(
        call_id=call_id,
        executor_id="reviewer",
        request_executor_id="request_info",
        request_type="tests.ApprovalRequest",
        response_type="tests.ApprovalResponse",
        request=data if data is not None else {"__type__": "tests.ApprovalRequest",
                                               "value": {"amount": 125.5, "reason": f"for {call_id}"}},
        created_at=created_at,
        deadline=deadline,
        approvers=list(approvers),
        policy={"reminders": [3600, 7200]} if approvers else {},
    )


def make_checkpoint(session_id: str, *, workflow: str = "wf", status: str = "pending",
                    requests: Sequence[PendingRequest] = (), **fields: Any) -> WorkflowCheckpoint:
    values: dict[str, Any] = {"created_at": T0, "updated_at": T0, **fields}
    return WorkflowCheckpoint(session_id=session_id, workflow=workflow, status=status,
                              pending_requests=list(requests), **values)


def make_audit(session_id: str, seq: int, action: str = "decided", **fields: Any) -> AuditRecord:
    return AuditRecord(session_id=session_id, seq=seq, action=action, actor=f"user-{seq}",
                       source="203.0.113.7", at=T0 + dt.timedelta(seconds=seq),
                       detail={"seq": seq, "nested": {"ok": True, "list": [1, "two", None]}},
                       prev_hash=None if seq == 1 else f"h{seq - 1}", hash=f"h{seq}", **fields)


def make_delegation(delegator: str, delegate: str, *, now: dt.datetime, ends_in: float = 86_400,
                    **fields: Any) -> Delegation:
    """A delegation that started an hour before ``now`` and ends ``ends_in`` seconds after it."""
    values: dict[str, Any] = {"starts_at": now - dt.timedelta(hours=1), "ends_at": now + dt.timedelta(seconds=ends_in),
                              "reason": f"{delegator} is out of office", "set_by": delegator, "set_at": now, **fields}
    return Delegation(delegator=delegator, delegate=delegate, **values)


def backend_now(backend: Backend) -> dt.datetime:
    """Now as the storage sees it: its manual clock, else the real time (Redis expires on its own clock)."""
    seconds = backend.clock() if backend.clock is not None else time.time()
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _delegations(storage: object) -> DelegationStorage:
    expect(isinstance(storage, DelegationStorage), f"{type(storage).__name__} does not implement DelegationStorage")
    assert isinstance(storage, DelegationStorage)
    return storage


async def _must_load_delegation(storage: DelegationStorage, delegator: str, what: str) -> StoredDelegation:
    stored = await storage.load_delegation(delegator)
    expect(stored is not None, f"{what}: load_delegation({delegator!r}) returned None")
    assert stored is not None
    return stored


async def _delegators(storage: DelegationStorage, delegate: str | None = None) -> list[str]:
    return [d.delegator for d in await storage.list_delegations(delegate=delegate)]


async def _must_load(storage: CheckpointStorage, session_id: str, what: str) -> StoredCheckpoint:
    stored = await storage.load(session_id)
    expect(stored is not None, f"{what}: load({session_id!r}) returned None")
    assert stored is not None
    return stored


async def _all_sessions(storage: CheckpointStorage, *, limit: int, **filters: Any) -> list[SessionSummary]:
    return await _drain(lambda c: storage.list_sessions(limit=limit, continuation=c, **filters), limit,
                        key=lambda s: s.session_id)


async def _all_inbox(storage: CheckpointStorage, *, limit: int, **filters: Any) -> list[PendingRequestEntry]:
    return await _drain(lambda c: storage.list_pending_requests(limit=limit, continuation=c, **filters), limit,
                        key=lambda e: (e.session_id, e.request.call_id))




async def _drain[R](fetch: Callable[[str | None], Awaitable[Page[R]]], limit: int,
                 key: Callable[[R], Any], max_pages: int = 1000) -> list[R]:
    """Follow continuation tokens to the end, checking page sizes and that nothing repeats."""
    items: list[R] = []
    seen: set[Any] = set()
    token: str | None = None
    for _ in range(max_pages):
        page = await fetch(token)
        expect(len(page.items) <= limit, f"a page holds {len(page.items)} items, over limit={limit}")
        for item in page.items:
            k = key(item)
            expect(k not in seen, f"paging returned {k!r} twice")
            seen.add(k)
        items.extend(page.items)
        if page.continuation is None:
            return items
        expect(isinstance(page.continuation, str) and page.continuation != "",
               f"continuation must be a non-empty string or None, got {page.continuation!r}")
        expect(page.continuation != token, "continuation did not move forward")
        token = page.continuation
    raise ConformanceError(f"paging did not end after {max_pages} pages")


def _inbox_ids(entries: Sequence[PendingRequestEntry]) -> list[tuple[str, str]]:
    return [(e.session_id, e.request.call_id) for e in entries]


def _datetimes(value: Any) -> list[dt.datetime]:
    if isinstance(value, dt.datetime):
        return [value]
    if isinstance(value, dict):
        return [d for v in value.values() for d in _datetimes(v)]
    if isinstance(value, list | tuple):
        return [d for v in value for d in _datetimes(v)]
    if hasattr(value, "__pydantic_fields__"):
        return [d for name in type(value).__pydantic_fields__ for d in _datetimes(getattr(value, name))]
    return []


# -- the checks ---------------------------------------------------------------------------------
@check
async def check_protocol_surface(backend: Backend) -> None:
    """The storage satisfies the protocol and exposes its size limit."""
    storage = backend.storage
    expect(isinstance(storage, CheckpointStorage), f"{type(storage).__name__} does not implement CheckpointStorage")
    limit = getattr(storage, "max_document_bytes", "missing")
    expect(isinstance(limit, int) and limit > 0,
           f"max_document_bytes must be a positive int (every real store has a limit), got {limit!r}")
    expect(await storage.load("never-saved") is None, "load of a session never saved must return None")
    expect(await storage.list_audit("never-saved") == [], "list_audit of an unknown session must be []")
    empty = await storage.list_sessions()
    expect(empty.items == [] and empty.continuation is None, f"an empty store lists sessions: {empty!r}")
    inbox = await storage.list_pending_requests()
    expect(inbox.items == [] and inbox.continuation is None, f"an empty store has an inbox: {inbox!r}")
    count = await storage.count_pending_requests()
    expect(count == 0, f"an empty store counts {count!r} pending requests")
    delegations = _delegations(storage)
    expect(await delegations.load_delegation("never-delegated") is None,
           "load_delegation of a person who never delegated must return None")
    expect(await delegations.list_delegations() == [], "an empty store lists delegations")
    expect(await delegations.list_delegations(delegate="anyone") == [], "an empty store lists delegations to anyone")


@check
async def check_round_trip(backend: Backend) -> None:
    """Every field comes back as saved: nested encoded data, exact numbers, tz-aware datetimes."""
    storage = backend.storage
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    request = make_request("call-1", created_at=dt.datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC),
                           approvers=["alice@example.com", "bob"],
                           deadline=dt.datetime(2030, 1, 4, 9, 0, tzinfo=india),
                           data={"__type__": "tests.Expense", "value": {
                               "amount": 1234.56, "items": [{"sku": "A-1", "qty": 3}, {"sku": "B-2", "qty": None}],
                               "flags": {"urgent": True, "reviewed": False}, "note": ""}})
    original = WorkflowCheckpoint(
        session_id="round-trip", workflow="expense", status="pending",
        created_at=dt.datetime(2030, 1, 2, 3, 4, 5, 1, tzinfo=dt.UTC),
        updated_at=dt.datetime(2030, 1, 2, 8, 34, 5, 999999, tzinfo=india),
        superstep=7,
        executor_states={"reviewer": {"seen": [1, 2, 3], "last": {"at": "2030-01-01T00:00:00+00:00"}}},
        shared_state={"big_int": 2**53 + 1, "huge_int": 2**63 + 7, "neg": -(2**62), "float": 0.1,
                      "tiny": 5e-324, "exp": 1.7976931348623157e308, "none": None, "empty": {}, "list": []},
        queue=[{"source": "a", "target": "b", "payload": {"__type__": "x.Y", "value": [1, {"z": "2"}]}}],
        pending_requests=[request],
        decisions=[Decision(call_id="call-0", request_type="tests.ApprovalRequest", result={"approved": True},
                            decided_by="carol", decided_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC), applied=True,
                            outcome="answered", request={"amount": 1}, executor_id="reviewer",
                            request_executor_id="request_info")],
        outputs=["done?", {"total": 3}],
        outbox=[{"type": "hitl.request.created", "id": "evt-1", "data": {"call_id": "call-1"}}],
        input_fingerprint="sha256:abc",
        error=None,
        audit_seq=3,
        audit_head="h3",
        metadata={"tenant": "contoso", "tags": ["a", "b"]},
    )
    version = await storage.save(original, expected_version=None)
    expect(isinstance(version, str) and version != "", f"save must return a non-empty version string, got {version!r}")
    stored = await _must_load(storage, "round-trip", "round trip")
    expect(stored.version == version, f"load returned version {stored.version!r}, save returned {version!r}")
    loaded = stored.checkpoint
    expect(loaded == original, f"round trip changed the checkpoint:\n{loaded!r}\n!=\n{original!r}")
    expect(loaded.model_dump_json() == original.model_dump_json(), "round trip changed the JSON form")
    expect(loaded.shared_state["huge_int"] == 2**63 + 7 and type(loaded.shared_state["huge_int"]) is int,
           f"large integers must survive exactly, got {loaded.shared_state['huge_int']!r}")
    stamps = _datetimes(loaded)
    expect(len(stamps) == len(_datetimes(original)) == 5, f"datetimes went missing: {stamps}")
    expect(all(s.tzinfo is not None and s.utcoffset() is not None for s in stamps),
           f"every datetime must come back timezone-aware: {stamps}")
    expect(loaded.updated_at.utcoffset() == dt.timedelta(hours=5, minutes=30),
           f"the UTC offset must be kept, got {loaded.updated_at.isoformat()}")
    # what is stored is a copy: changing the caller's object after saving changes nothing
    original.shared_state["float"] = 99.0
    original.pending_requests.clear()
    again = await _must_load(storage, "round-trip", "isolation")
    expect(again.checkpoint.shared_state["float"] == 0.1 and len(again.checkpoint.pending_requests) == 1,
           "mutating the saved object changed the stored checkpoint")


@check
async def check_create_only(backend: Backend) -> None:
    """expected_version=None creates; on an existing session it is a conflict and writes nothing."""
    storage = backend.storage
    first = make_checkpoint("create-only", metadata={"writer": "first"})
    v1 = await storage.save(first, expected_version=None)
    err = await expect_raises(ConcurrencyError, storage.save(
        make_checkpoint("create-only", metadata={"writer": "second"}), expected_version=None,
        audit=[make_audit("create-only", 1)]), "second create of the same session")
    expect(err.session_id == "create-only", f"ConcurrencyError.session_id is {err.session_id!r}")
    expect(err.expected is None and err.actual == v1,
           f"ConcurrencyError must carry expected=None, actual={v1!r}; got {err.expected!r}, {err.actual!r}")
    stored = await _must_load(storage, "create-only", "after refused create")
    expect(stored.version == v1 and stored.checkpoint.metadata == {"writer": "first"},
           "a refused create overwrote the stored session")
    expect(await storage.list_audit("create-only") == [], "a refused create appended its audit records")


@check
async def check_stale_version_conflicts(backend: Backend) -> None:
    """Only the current version may write; the error names expected and actual versions."""
    storage = backend.storage
    v1 = await storage.save(make_checkpoint("stale", superstep=1), expected_version=None)
    v2 = await storage.save(make_checkpoint("stale", superstep=2), expected_version=v1)
    for wrong in (v1, "not-a-version", v2 + "0", ""):
        err = await expect_raises(ConcurrencyError, storage.save(
            make_checkpoint("stale", superstep=99), expected_version=wrong), f"save with version {wrong!r}")
        expect(err.expected == wrong and err.actual == v2,
               f"expected=({wrong!r}, {v2!r}), got ({err.expected!r}, {err.actual!r})")
    stored = await _must_load(storage, "stale", "after conflicts")
    expect(stored.version == v2 and stored.checkpoint.superstep == 2, "a conflicting save changed the session")
    err = await expect_raises(ConcurrencyError, storage.save(
        make_checkpoint("stale-missing"), expected_version=v1), "update of a session that does not exist")
    expect(err.actual is None, f"conflict on a missing session must say actual=None, got {err.actual!r}")
    expect(await storage.load("stale-missing") is None, "an update of a missing session created it")


@check
async def check_versions_change_on_every_save(backend: Backend) -> None:
    """Each save yields a new version, load reports it, and only it can be used next."""
    storage = backend.storage
    versions: list[str] = []
    expected: str | None = None
    for step in range(8):
        expected = await storage.save(make_checkpoint("versions", superstep=step), expected_version=expected)
        versions.append(expected)
        stored = await _must_load(storage, "versions", f"after save {step}")
        expect(stored.version == expected and stored.checkpoint.superstep == step,
               f"after save {step} load says version {stored.version!r}/step {stored.checkpoint.superstep}")
    expect(len(set(versions)) == len(versions), f"versions repeat: {versions}")
    for old in versions[:-1]:
        await expect_raises(ConcurrencyError, storage.save(make_checkpoint("versions"), expected_version=old),
                            f"save with superseded version {old!r}")


@check
async def check_delete(backend: Backend) -> None:
    """delete removes session, inbox entries and audit; honours expected_version; False when absent."""
    storage = backend.storage
    expect(await storage.delete("del-missing") is False, "delete of a missing session must return False")
    expect(await storage.delete("del-missing", expected_version="1") is False,
           "delete of a missing session with a version must return False")
    ck = make_checkpoint("del", requests=[make_request("c1", approvers=["ann"])])
    v1 = await storage.save(ck, expected_version=None, audit=[make_audit("del", 1)])
    v2 = await storage.save(ck, expected_version=v1, audit=[make_audit("del", 2)])
    await storage.save(make_checkpoint("keep", requests=[make_request("k1")]), expected_version=None,
                       audit=[make_audit("keep", 1)])
    err = await expect_raises(ConcurrencyError, storage.delete("del", expected_version=v1), "delete with stale version")
    expect(err.expected == v1 and err.actual == v2, f"delete conflict carries ({err.expected!r}, {err.actual!r})")
    expect((await _must_load(storage, "del", "after refused delete")).version == v2, "a refused delete removed it")
    expect(await storage.delete("del", expected_version=v2) is True, "delete with the current version must succeed")
    expect(await storage.load("del") is None, "a deleted session still loads")
    expect(await storage.list_audit("del") == [], "delete must remove the session's audit trail")
    expect([s.session_id for s in (await storage.list_sessions()).items] == ["keep"],
           "a deleted session is still listed")
    expect(_inbox_ids((await storage.list_pending_requests()).items) == [("keep", "k1")],
           "a deleted session's requests are still in the inbox")
    expect(await storage.delete("del") is False, "a second delete must return False")
    expect(await storage.delete("keep") is True, "delete without expected_version must succeed")
    expect(await storage.load("keep") is None, "unconditional delete did not remove the session")
    v_new = await storage.save(make_checkpoint("del", superstep=5), expected_version=None)
    stored = await _must_load(storage, "del", "re-created after delete")
    expect(stored.version == v_new and stored.checkpoint.superstep == 5, "re-creating a deleted session failed")
    expect(await storage.list_audit("del") == [], "a re-created session inherited a deleted audit trail")


@check
async def check_list_sessions_filters(backend: Backend) -> None:
    """list_sessions orders by id and filters by workflow, status, or both; summaries are current."""
    storage = backend.storage
    layout = [("s-05", "alpha", "pending"), ("s-01", "beta", "completed"), ("s-03", "alpha", "completed"),
              ("s-02", "alpha", "running"), ("s-04", "beta", "pending"), ("S-00", "gamma", "failed")]
    for sid, wf, status in layout:
        await storage.save(make_checkpoint(sid, workflow=wf, status=status,
                                           updated_at=T0 + dt.timedelta(minutes=int(sid[-1]))),
                           expected_version=None)
    everything = await storage.list_sessions()
    expect([s.session_id for s in everything.items] == ["S-00", "s-01", "s-02", "s-03", "s-04", "s-05"],
           f"sessions must be ordered by id (code point order): {[s.session_id for s in everything.items]}")
    expect(everything.continuation is None, "a complete listing must not carry a continuation")
    s3 = next(s for s in everything.items if s.session_id == "s-03")
    expect((s3.workflow, s3.status, s3.updated_at) == ("alpha", "completed", T0 + dt.timedelta(minutes=3)),
           f"summary fields are wrong: {s3!r}")
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"workflow": "alpha"}, ["s-02", "s-03", "s-05"]),
        ({"status": "completed"}, ["s-01", "s-03"]),
        ({"workflow": "beta", "status": "pending"}, ["s-04"]),
        ({"workflow": "alpha", "status": "failed"}, []),
        ({"workflow": "nope"}, []),
    ]
    for filters, want in cases:
        got = [s.session_id for s in (await storage.list_sessions(**filters)).items]
        expect(got == want, f"list_sessions({filters}) -> {got}, expected {want}")
    # a status change moves the session between filters
    stored = await _must_load(storage, "s-04", "status change")
    await storage.save(make_checkpoint("s-04", workflow="beta", status="completed"), expected_version=stored.version)
    got = [s.session_id for s in (await storage.list_sessions(status="completed")).items]
    expect(got == ["s-01", "s-03", "s-04"], f"after s-04 completed, status=completed lists {got}")
    got = [s.session_id for s in (await storage.list_sessions(status="pending")).items]
    expect(got == ["s-05"], f"after s-04 completed, status=pending lists {got}")


@check
async def check_list_sessions_paging(backend: Backend) -> None:
    """Continuation tokens walk every session exactly once, in order, with or without filters."""
    storage = backend.storage
    ids = [f"p-{n:03d}" for n in range(23)]
    for n, sid in enumerate(ids):
        await storage.save(make_checkpoint(sid, workflow="even" if n % 2 == 0 else "odd"), expected_version=None)
    for limit in (1, 5, 23, 50):
        got = [s.session_id for s in await _all_sessions(storage, limit=limit)]
        expect(got == ids, f"paging with limit={limit} returned {got}")
    got = [s.session_id for s in await _all_sessions(storage, limit=4, workflow="odd")]
    expect(got == ids[1::2], f"paging the 'odd' workflow returned {got}")
    first = await storage.list_sessions(limit=5)
    expect([s.session_id for s in first.items] == ids[:5] and first.continuation is not None,
           f"first page of 5: {[s.session_id for s in first.items]}, continuation {first.continuation!r}")
    # keyset paging: sessions created before the cursor are not repeated, after it they appear
    await storage.save(make_checkpoint("p-000a"), expected_version=None)
    await storage.save(make_checkpoint("p-999"), expected_version=None)
    rest = await _drain(lambda c: storage.list_sessions(limit=5, continuation=c or first.continuation), 5,
                        key=lambda s: s.session_id)
    expect([s.session_id for s in rest] == [*ids[5:], "p-999"],
           f"pages after the first: {[s.session_id for s in rest]}")


@check
async def check_ttl_expiry(backend: Backend) -> None:
    """A session saved with a TTL disappears from load, listings and the inbox; its audit stays."""
    storage = backend.storage
    doomed = make_checkpoint("ttl-doomed", status="completed", requests=[make_request("d1", approvers=["ann"])])
    v1 = await storage.save(doomed, expected_version=None, ttl_seconds=1, audit=[make_audit("ttl-doomed", 1)])
    await storage.save(make_checkpoint("ttl-kept", requests=[make_request("k1", approvers=["ann"])]),
                       expected_version=None)
    if backend.ttl_probe is not None:
        ttl = await backend.ttl_probe("ttl-doomed")
        expect(ttl is not None and 0 < ttl <= 1, f"stored TTL of a 1 s session is {ttl!r}")
        expect(await backend.ttl_probe("ttl-kept") is None, "a session saved without a TTL has one")
    if not backend.can_expire:
        expect(backend.ttl_probe is not None, f"backend {backend.name!r} offers no way to check TTLs")
        return
    await backend.advance(0.5)
    expect(await storage.load("ttl-doomed") is not None, "a session expired before its TTL")
    await backend.advance(0.6)
    expect(await storage.load("ttl-doomed") is None, "a session outlived its TTL")
    expect([s.session_id for s in (await storage.list_sessions()).items] == ["ttl-kept"],
           "an expired session is still listed")
    expect([s.session_id for s in (await storage.list_sessions(status="completed")).items] == [],
           "an expired session is still listed by status")
    inbox_filters: list[dict[str, Any]] = [{}, {"assignee": "ann"}, {"workflow": "wf"}]
    for filters in inbox_filters:
        got = _inbox_ids((await storage.list_pending_requests(**filters)).items)
        expect(got == [("ttl-kept", "k1")], f"inbox {filters} after expiry lists {got}")
    audit = await storage.list_audit("ttl-doomed")
    expect([r.seq for r in audit] == [1], f"audit records must outlive the session's TTL, got {audit}")
    err = await expect_raises(ConcurrencyError, storage.save(doomed, expected_version=v1),
                              "update of an expired session")
    expect(err.actual is None, f"an expired session's actual version must be None, got {err.actual!r}")
    await storage.save(make_checkpoint("ttl-doomed", superstep=3), expected_version=None)
    stored = await _must_load(storage, "ttl-doomed", "re-created after expiry")
    expect(stored.checkpoint.superstep == 3, "re-creating an expired session failed")
    expect(await storage.delete("ttl-kept") is True, "delete of a live session failed after an expiry")


@check
async def check_ttl_cleared_by_save_without_ttl(backend: Backend) -> None:
    """Each save sets the TTL afresh: saving again without ttl_seconds keeps the session forever."""
    storage = backend.storage
    v1 = await storage.save(make_checkpoint("ttl-reset", status="completed"), expected_version=None, ttl_seconds=1)
    await storage.save(make_checkpoint("ttl-reset", status="pending"), expected_version=v1)
    if backend.ttl_probe is not None:
        expect(await backend.ttl_probe("ttl-reset") is None, "a save without ttl_seconds kept the old TTL")
    if not backend.can_expire:
        return
    await backend.advance(1.2)
    expect(await storage.load("ttl-reset") is not None, "a save without ttl_seconds did not clear the TTL")
    expect([s.session_id for s in (await storage.list_sessions()).items] == ["ttl-reset"],
           "a session whose TTL was cleared is not listed")


@check
async def check_inbox_order(backend: Backend) -> None:
    """Without deadlines the inbox is ordered by created_at, then session id, then call id; entries are complete."""
    storage = backend.storage
    t = T0
    half = t + dt.timedelta(microseconds=500_000)
    plan = {
        "s-b": [make_request("c-2", created_at=t), make_request("c-1", created_at=t),
                make_request("c-10", created_at=half)],
        "s-a": [make_request("z", created_at=t), make_request("late", created_at=t + dt.timedelta(days=1))],
        "s-c": [make_request("early", created_at=t - dt.timedelta(seconds=1))],
        "s-a|x": [make_request("a", created_at=t)],
        "s-0": [],
    }
    for sid, requests in plan.items():
        await storage.save(make_checkpoint(sid, workflow="order", requests=requests), expected_version=None)
    expected = [("s-c", "early"), ("s-a", "z"), ("s-a|x", "a"), ("s-b", "c-1"), ("s-b", "c-2"),
                ("s-b", "c-10"), ("s-a", "late")]
    page = await storage.list_pending_requests()
    expect(_inbox_ids(page.items) == expected, f"inbox order is {_inbox_ids(page.items)}, expected {expected}")
    expect(page.continuation is None, "a complete inbox page must not carry a continuation")
    entry = next(e for e in page.items if e.request.call_id == "c-10")
    expect(entry.workflow == "order" and entry.request == plan["s-b"][2],
           f"an inbox entry lost data: {entry!r}")
    paged = _inbox_ids(await _all_inbox(storage, limit=2))
    expect(paged == expected, f"paged inbox order is {paged}")


@check
async def check_inbox_deadline_order(backend: Backend) -> None:
    """The nearest deadline comes first (requests without one last, oldest first), across pages and
    sessions, for one assignee too; a deadline moved by a save (an escalation) moves the request."""
    storage = backend.storage
    t = T0
    plan = {
        "d-1": [make_request("far", created_at=t, deadline=t + dt.timedelta(days=5), approvers=["role:r"]),
                make_request("none-old", created_at=t - dt.timedelta(days=1), approvers=["role:r"])],
        "d-2": [make_request("soon", created_at=t + dt.timedelta(hours=1), deadline=t + dt.timedelta(hours=2),
                             approvers=["role:r"])],
        "d-3": [make_request("none-new", created_at=t + dt.timedelta(hours=3), approvers=["role:r"]),
                make_request("mid", created_at=t + dt.timedelta(hours=4), deadline=t + dt.timedelta(days=1),
                             approvers=["role:r"])],
    }
    versions = {}
    for sid, requests in plan.items():
        versions[sid] = await storage.save(make_checkpoint(sid, workflow="due", requests=requests),
                                           expected_version=None)
    expected = [("d-2", "soon"), ("d-3", "mid"), ("d-1", "far"), ("d-1", "none-old"), ("d-3", "none-new")]
    filter_sets: list[dict[str, Any]] = [{}, {"assignee": "role:r"}, {"workflow": "due"}]
    for filters in filter_sets:
        whole = _inbox_ids((await storage.list_pending_requests(**filters)).items)
        expect(whole == expected, f"inbox order with {filters} is {whole}, expected {expected}")
        paged = _inbox_ids(await _all_inbox(storage, limit=2, **filters))
        expect(paged == expected, f"paged inbox order with {filters} is {paged}, expected {expected}")
    moved = make_checkpoint("d-1", workflow="due", requests=[
        make_request("far", created_at=t, deadline=t + dt.timedelta(minutes=30), approvers=["role:r"]),
        plan["d-1"][1]])
    await storage.save(moved, expected_version=versions["d-1"])
    first = _inbox_ids((await storage.list_pending_requests(limit=1)).items)
    expect(first == [("d-1", "far")], f"a request whose deadline moved nearer did not move up: {first}")


@check
async def check_inbox_filters(backend: Backend) -> None:
    """The inbox filters by workflow, by assignee (any of the approvers), and by both."""
    storage = backend.storage
    await storage.save(make_checkpoint("f-1", workflow="expense", requests=[
        make_request("a", approvers=["ann", "bob"]), make_request("b", approvers=[])]), expected_version=None)
    await storage.save(make_checkpoint("f-2", workflow="leave", requests=[
        make_request("c", approvers=["bob"], created_at=T0 + dt.timedelta(seconds=1))]), expected_version=None)
    await storage.save(make_checkpoint("f-3", workflow="expense", requests=[
        make_request("d", approvers=["carol", "ann"], created_at=T0 + dt.timedelta(seconds=2))]),
        expected_version=None)
    cases: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
        ({}, [("f-1", "a"), ("f-1", "b"), ("f-2", "c"), ("f-3", "d")]),
        ({"workflow": "expense"}, [("f-1", "a"), ("f-1", "b"), ("f-3", "d")]),
        ({"workflow": "leave"}, [("f-2", "c")]),
        ({"assignee": "ann"}, [("f-1", "a"), ("f-3", "d")]),
        ({"assignee": "bob"}, [("f-1", "a"), ("f-2", "c")]),
        ({"assignee": "bob", "workflow": "expense"}, [("f-1", "a")]),
        ({"assignee": "carol", "workflow": "leave"}, []),
        ({"assignee": "an"}, []),
        ({"workflow": "exp"}, []),
    ]
    for filters, want in cases:
        got = _inbox_ids((await storage.list_pending_requests(**filters)).items)
        expect(got == want, f"list_pending_requests({filters}) -> {got}, expected {want}")
        paged = _inbox_ids(await _all_inbox(storage, limit=1, **filters))
        expect(paged == want, f"paged list_pending_requests({filters}) -> {paged}, expected {want}")


@check
async def check_inbox_paging(backend: Backend) -> None:
    """Continuation tokens walk the inbox across many sessions exactly once, filtered or not."""
    storage = backend.storage
    expected: list[tuple[dt.datetime, str, str]] = []
    for n in range(30):
        sid = f"pg-{n:02d}"
        requests = [make_request(f"r{k}", created_at=T0 + dt.timedelta(seconds=(n * 7 + k * 3) % 11),
                                 approvers=["ann"] if (n + k) % 3 == 0 else ["bob"])
                    for k in range(1 + n % 3)]
        expected += [(r.created_at, sid, r.call_id) for r in requests]
        await storage.save(make_checkpoint(sid, workflow="w1" if n < 15 else "w2", requests=requests),
                           expected_version=None)
    expected.sort()
    want = [(sid, cid) for _, sid, cid in expected]
    for limit in (1, 7, 60, 100):
        got = _inbox_ids(await _all_inbox(storage, limit=limit))
        expect(got == want, f"inbox paging with limit={limit} differs from the full order ({len(got)} items)")
    in_w2 = [(s, c) for s, c in want if int(s[3:]) >= 15]
    expect(_inbox_ids(await _all_inbox(storage, limit=4, workflow="w2")) == in_w2, "paging workflow=w2 differs")
    anns = [(s, c) for s, c in want if (int(s[3:]) + int(c[1:])) % 3 == 0]
    expect(_inbox_ids(await _all_inbox(storage, limit=3, assignee="ann")) == anns, "paging assignee=ann differs")
    both = [(s, c) for s, c in anns if int(s[3:]) < 15]
    expect(_inbox_ids(await _all_inbox(storage, limit=2, assignee="ann", workflow="w1")) == both,
           "paging assignee=ann workflow=w1 differs")
    first = await storage.list_pending_requests(limit=7)
    expect(len(first.items) == 7 and first.continuation is not None, "the first page of 7 is not full")


@check
async def check_inbox_follows_saves(backend: Backend) -> None:
    """A request leaves the inbox as soon as the session is saved without it."""
    storage = backend.storage
    r1 = make_request("r1", approvers=["ann"])
    r2 = make_request("r2", approvers=["ann"], created_at=T0 + dt.timedelta(seconds=1))
    v = await storage.save(make_checkpoint("follow", requests=[r1, r2]), expected_version=None)
    both = _inbox_ids((await storage.list_pending_requests(assignee="ann")).items)
    expect(both == [("follow", "r1"), ("follow", "r2")], f"both requests must be in the inbox, got {both}")
    v = await storage.save(make_checkpoint("follow", requests=[r2]), expected_version=v)
    inbox_filters: list[dict[str, Any]] = [{}, {"assignee": "ann"}, {"workflow": "wf"}]
    for filters in inbox_filters:
        got = _inbox_ids((await storage.list_pending_requests(**filters)).items)
        expect(got == [("follow", "r2")], f"after r1 was answered, inbox {filters} lists {got}")
    r2_moved = make_request("r2", approvers=["bob"], created_at=T0 + dt.timedelta(seconds=1))
    v = await storage.save(make_checkpoint("follow", requests=[r2_moved]), expected_version=v)
    expect(_inbox_ids((await storage.list_pending_requests(assignee="ann")).items) == [],
           "a request reassigned to bob is still in ann's inbox")
    expect(_inbox_ids((await storage.list_pending_requests(assignee="bob")).items) == [("follow", "r2")],
           "a request reassigned to bob is not in bob's inbox")
    await storage.save(make_checkpoint("follow", status="completed"), expected_version=v)
    expect((await storage.list_pending_requests()).items == [], "a completed session left requests in the inbox")
    expect((await storage.list_pending_requests(assignee="bob")).items == [], "bob's inbox kept a resolved request")


@check
async def check_inbox_any_of_assignees(backend: Backend) -> None:
    """assignees=[...] lists requests naming ANY of the keys, each once; assignee= is its one-key form."""
    storage = backend.storage
    amy, fin = "user:amy", "role:finance"
    plan: list[tuple[str, str, list[tuple[str, int, list[str]]]]] = [
        ("m-1", "expense", [("a", 0, [amy, fin]), ("b", 1, ["role:hr"])]),
        ("m-2", "leave", [("c", 2, [fin])]),
        ("m-3", "expense", [("d", 3, ["amy"])]),  # a plain string, as older checkpoints hold
        ("m-4", "expense", [("e", 1, [])]),
        ("m-5", "leave", [("f", 4, ["user:bob", "role:hr"])]),
    ]
    for sid, wf, requests in plan:
        await storage.save(make_checkpoint(sid, workflow=wf, requests=[
            make_request(cid, created_at=T0 + dt.timedelta(seconds=sec), approvers=approvers)
            for cid, sec, approvers in requests]), expected_version=None)
    cases: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
        ({"assignees": [amy, fin]}, [("m-1", "a"), ("m-2", "c")]),
        ({"assignees": (fin, amy)}, [("m-1", "a"), ("m-2", "c")]),
        ({"assignees": [amy, amy, fin, amy]}, [("m-1", "a"), ("m-2", "c")]),
        ({"assignees": [amy, "amy"]}, [("m-1", "a"), ("m-3", "d")]),
        ({"assignees": ["role:hr", "user:bob"]}, [("m-1", "b"), ("m-5", "f")]),
        ({"assignees": [amy, fin], "workflow": "expense"}, [("m-1", "a")]),
        ({"assignees": [amy, fin], "workflow": "leave"}, [("m-2", "c")]),
        ({"assignees": [amy, fin], "workflow": "nope"}, []),
        ({"assignees": ["user:zed"]}, []),
        ({"assignees": ["user:zed", "role:nobody"]}, []),
        ({"assignees": ["user:am", "role:"]}, []),
        ({"assignees": []}, []),
        ({"assignee": fin}, [("m-1", "a"), ("m-2", "c")]),
        ({"assignees": [fin]}, [("m-1", "a"), ("m-2", "c")]),
        ({"assignee": "amy", "workflow": "expense"}, [("m-3", "d")]),
    ]
    for filters, want in cases:
        page = await storage.list_pending_requests(**filters)
        got = _inbox_ids(page.items)
        expect(got == want, f"list_pending_requests({filters}) -> {got}, expected {want}")
        expect(page.continuation is None, f"list_pending_requests({filters}): a complete page carries a continuation")
        paged = _inbox_ids(await _all_inbox(storage, limit=1, **filters))
        expect(paged == want, f"paged list_pending_requests({filters}) -> {paged}, expected {want}")
    entry = (await storage.list_pending_requests(assignees=[amy, fin])).items[0]
    expect(entry.workflow == "expense" and entry.request.approvers == [amy, fin],
           f"an entry matched by two keys lost data: {entry!r}")
    many = [f"role:r{n}" for n in range(MAX_INBOX_ASSIGNEES - 1)] + [fin]
    got = _inbox_ids((await storage.list_pending_requests(assignees=many)).items)
    expect(got == [("m-1", "a"), ("m-2", "c")], f"{MAX_INBOX_ASSIGNEES} keys -> {got}")
    too_many = [f"role:r{n}" for n in range(MAX_INBOX_ASSIGNEES)] + [fin]
    await expect_raises(ValueError, storage.list_pending_requests(assignees=too_many),
                        f"list_pending_requests with {len(too_many)} assignee keys")
    both_given: list[dict[str, Any]] = [{"assignee": amy, "assignees": [fin]}, {"assignee": amy, "assignees": [amy]},
                                        {"assignee": amy, "assignees": []}]
    for both in both_given:
        await expect_raises(ValueError, storage.list_pending_requests(**both),
                            f"list_pending_requests({both}): assignee= and assignees= together")
    try:
        result: Any = await storage.list_pending_requests(assignees=amy)  # a str is a Sequence[str] of letters
    except (TypeError, ValueError):
        pass
    else:
        raise ConformanceError(f"assignees={amy!r} (a bare string) must be refused, got {result!r:.200}")


@check
async def check_inbox_multi_key_paging(backend: Backend) -> None:
    """Paging a multi-key inbox repeats and skips nothing at boundaries, also with a workflow filter."""
    storage = backend.storage
    keys = ["user:amy", "role:finance", "role:audit"]
    plan: list[tuple[str, str, int, list[str], str]] = [  # session, call, seconds after T0, approvers, workflow
        ("p-1", "r1", 0, ["user:amy", "role:finance"], "w1"),
        ("p-1", "r2", 0, ["role:finance"], "w1"),
        ("p-2", "r1", 0, ["role:finance", "user:amy", "role:audit"], "w2"),
        ("p-3", "r1", 1, ["user:amy"], "w1"),
        ("p-3", "r2", 1, ["role:hr"], "w1"),
        ("p-4", "r1", 1, ["role:audit", "role:finance"], "w2"),
        ("p-5", "r1", 2, ["user:amy", "role:audit"], "w1"),
        ("p-6", "r1", 2, ["user:bob"], "w2"),
        ("p-7", "r1", 3, ["role:finance", "user:amy"], "w1"),
    ]
    sessions: dict[str, tuple[str, list[PendingRequest]]] = {}
    for sid, cid, sec, approvers, wf in plan:
        request = make_request(cid, created_at=T0 + dt.timedelta(seconds=sec), approvers=approvers)
        sessions.setdefault(sid, (wf, []))[1].append(request)
    for sid, (wf, requests) in sessions.items():
        await storage.save(make_checkpoint(sid, workflow=wf, requests=requests), expected_version=None)
    ordered = sorted(plan, key=lambda p: (p[2], p[0], p[1]))
    mine = [(sid, cid) for sid, cid, _, approvers, _ in ordered if set(approvers) & set(keys)]
    expect(len(mine) == 7, "test data: 7 requests must match")
    for limit in (1, 2, 3, 6, 7, 8):
        got = _inbox_ids(await _all_inbox(storage, limit=limit, assignees=keys))
        expect(got == mine, f"multi-key inbox paged by {limit}: {got}, expected {mine}")
    for wf in ("w1", "w2"):
        want = [(sid, cid) for sid, cid, _, approvers, w in ordered if w == wf and set(approvers) & set(keys)]
        for limit in (1, 2):
            got = _inbox_ids(await _all_inbox(storage, limit=limit, assignees=keys, workflow=wf))
            expect(got == want, f"multi-key inbox of {wf} paged by {limit}: {got}, expected {want}")
    two = ["user:amy", "role:finance"]
    want_two = [(sid, cid) for sid, cid, _, approvers, _ in ordered if set(approvers) & set(two)]
    got = _inbox_ids(await _all_inbox(storage, limit=2, assignees=two))
    expect(got == want_two, f"two-key inbox paged by 2: {got}, expected {want_two}")
    # page by page: exact pages, and a token keeps its place while requests come and go
    first = await storage.list_pending_requests(assignees=keys, limit=2)
    expect(_inbox_ids(first.items) == mine[:2] and first.continuation is not None,
           f"first page of 2: {_inbox_ids(first.items)}, continuation {first.continuation!r}")
    second = await storage.list_pending_requests(assignees=keys, limit=2, continuation=first.continuation)
    expect(_inbox_ids(second.items) == mine[2:4] and second.continuation is not None,
           f"second page of 2: {_inbox_ids(second.items)}")
    await storage.save(make_checkpoint("p-0", workflow="w1", requests=[
        make_request("r1", created_at=T0 - dt.timedelta(seconds=1), approvers=["user:amy", "role:audit"])]),
        expected_version=None)
    await storage.save(make_checkpoint("p-8", workflow="w2", requests=[
        make_request("r1", created_at=T0 + dt.timedelta(seconds=4), approvers=["role:audit", "role:finance"])]),
        expected_version=None)
    rest = await _drain(lambda c: storage.list_pending_requests(assignees=keys, limit=2,
                                                                continuation=c or second.continuation),
                        2, key=lambda e: (e.session_id, e.request.call_id))
    expect(_inbox_ids(rest) == [*mine[4:], ("p-8", "r1")],
           f"pages after a token, with a request added before and one after it: {_inbox_ids(rest)}")


def _claimed(call_id: str, who: str | None, until: dt.datetime | None, **fields: Any) -> PendingRequest:
    request = make_request(call_id, **fields)
    request.claimed_by, request.claimed_until = who, until
    return request


@check
async def check_inbox_claimed_by(backend: Backend) -> None:
    """``claimed_by`` lists the live claims of one person across pages and sessions, combined with the
    other filters; an expired claim, another person's claim and a released one are not listed; the count
    agrees; a claim taken or released by a save moves the request in or out."""
    storage = backend.storage
    now = backend_now(backend)
    live, gone = now + dt.timedelta(hours=1), now - dt.timedelta(minutes=1)
    t = T0
    plan = {
        "cl-1": [_claimed("a", "ann", live, created_at=t, approvers=["role:r"]),
                 _claimed("b", "bob", live, created_at=t, approvers=["role:r"])],
        "cl-2": [_claimed("c", "ann", gone, created_at=t + dt.timedelta(seconds=1), approvers=["role:r"]),
                 _claimed("d", "ann", live, created_at=t + dt.timedelta(seconds=2), approvers=["user:ann"],
                          deadline=t + dt.timedelta(hours=1))],
        "cl-3": [_claimed("e", None, None, created_at=t + dt.timedelta(seconds=3), approvers=["role:r"]),
                 _claimed("f", "ann", live, created_at=t + dt.timedelta(seconds=4), approvers=["role:r"])],
    }
    versions = {}
    for n, (sid, requests) in enumerate(plan.items()):
        versions[sid] = await storage.save(make_checkpoint(sid, workflow="claims" if n < 2 else "other",
                                                           requests=requests), expected_version=None)
    cases: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
        ({"claimed_by": "ann"}, [("cl-2", "d"), ("cl-1", "a"), ("cl-3", "f")]),
        ({"claimed_by": "bob"}, [("cl-1", "b")]),
        ({"claimed_by": "carol"}, []),
        ({"claimed_by": "an"}, []),
        ({"claimed_by": "ann", "workflow": "claims"}, [("cl-2", "d"), ("cl-1", "a")]),
        ({"claimed_by": "ann", "assignee": "role:r"}, [("cl-1", "a"), ("cl-3", "f")]),
        ({"claimed_by": "ann", "assignees": ["user:ann", "role:r"], "workflow": "other"}, [("cl-3", "f")]),
    ]
    for filters, want in cases:
        for limit in (1, 2, 50):
            got = _inbox_ids(await _all_inbox(storage, limit=limit, **filters))
            expect(got == want, f"list_pending_requests({filters}, limit={limit}) -> {got}, expected {want}")
        count = await storage.count_pending_requests(**filters)
        expect(count == len(want), f"count_pending_requests({filters}) -> {count}, expected {len(want)}")
    released = make_checkpoint("cl-1", workflow="claims", requests=[
        _claimed("a", None, None, created_at=t, approvers=["role:r"]), plan["cl-1"][1]])
    await storage.save(released, expected_version=versions["cl-1"])
    taken = make_checkpoint("cl-3", workflow="other", requests=[
        _claimed("e", "ann", live, created_at=t + dt.timedelta(seconds=3), approvers=["role:r"]), plan["cl-3"][1]])
    await storage.save(taken, expected_version=versions["cl-3"])
    got = _inbox_ids(await _all_inbox(storage, limit=2, claimed_by="ann"))
    want = [("cl-2", "d"), ("cl-3", "e"), ("cl-3", "f")]
    expect(got == want, f"after a release and a claim, claimed_by=ann -> {got}, expected {want}")
    expect(await storage.count_pending_requests(claimed_by="ann") == 3, "the count did not follow the claims")


@check
async def check_inbox_due_before(backend: Backend) -> None:
    """``due_before`` keeps the requests whose deadline is before the bound (none without a deadline),
    across pages and with the other filters; the count agrees."""
    storage = backend.storage
    t = T0
    await storage.save(make_checkpoint("du-1", workflow="w1", requests=[
        make_request("soon", deadline=t + dt.timedelta(hours=1), approvers=["role:r"]),
        make_request("late", deadline=t + dt.timedelta(days=3), approvers=["role:r"]),
        make_request("never", approvers=["role:r"])]), expected_version=None)
    await storage.save(make_checkpoint("du-2", workflow="w2", requests=[
        make_request("overdue", deadline=t - dt.timedelta(hours=1), approvers=["user:ann"]),
        make_request("edge", deadline=t + dt.timedelta(days=1), approvers=["role:r"])]), expected_version=None)
    day = t + dt.timedelta(days=1)
    cases: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
        ({"due_before": day}, [("du-2", "overdue"), ("du-1", "soon")]),
        ({"due_before": day + dt.timedelta(microseconds=1)}, [("du-2", "overdue"), ("du-1", "soon"), ("du-2", "edge")]),
        ({"due_before": day, "assignee": "role:r"}, [("du-1", "soon")]),
        ({"due_before": day, "workflow": "w2"}, [("du-2", "overdue")]),
        ({"due_before": t - dt.timedelta(days=9)}, []),
        ({"due_before": dt.datetime(9000, 1, 1, tzinfo=dt.UTC)},
         [("du-2", "overdue"), ("du-1", "soon"), ("du-2", "edge"), ("du-1", "late")]),
    ]
    for filters, want in cases:
        got = _inbox_ids(await _all_inbox(storage, limit=1, **filters))
        expect(got == want, f"list_pending_requests({filters}) -> {got}, expected {want}")
        count = await storage.count_pending_requests(**filters)
        expect(count == len(want), f"count_pending_requests({filters}) -> {count}, expected {len(want)}")


@check
async def check_inbox_counts(backend: Backend) -> None:
    """``count_pending_requests`` agrees with a full walk of the inbox for every filter (a request
    matching several assignee keys counts once), and follows saves and deletes."""
    storage = backend.storage
    for n in range(12):
        requests = [make_request(f"r{k}", created_at=T0 + dt.timedelta(seconds=n * 3 + k),
                                 approvers=[["user:ann"], ["role:r"], ["user:ann", "role:r"]][(n + k) % 3])
                    for k in range(1 + n % 3)]
        await storage.save(make_checkpoint(f"ct-{n:02d}", workflow="w1" if n % 2 else "w2", requests=requests),
                           expected_version=None)
    filter_sets: list[dict[str, Any]] = [
        {}, {"workflow": "w1"}, {"assignee": "user:ann"}, {"assignees": ["user:ann", "role:r"]},
        {"assignees": ["role:r"], "workflow": "w2"}, {"assignees": []}, {"workflow": "none"},
    ]
    for filters in filter_sets:
        walked = len(await _all_inbox(storage, limit=5, **filters))
        count = await storage.count_pending_requests(**filters)
        expect(count == walked, f"count_pending_requests({filters}) -> {count}, the inbox lists {walked}")
    total = await storage.count_pending_requests()
    expect(total == 24, f"12 sessions hold 24 requests, the count says {total}")
    await storage.delete("ct-00")
    stored = await _must_load(storage, "ct-01", "counts")
    await storage.save(make_checkpoint("ct-01", workflow="w1", status="completed"), expected_version=stored.version)
    expect(await storage.count_pending_requests() == 24 - 1 - 2, "the count did not follow a delete and a completion")


@check
async def check_sessions_by_participant(backend: Backend) -> None:
    """``list_sessions(participant=...)`` lists the sessions a person started, decided, voted in or acted
    for someone in, across pages and with the other filters, and follows saves that add a vote."""
    storage = backend.storage
    decided = Decision(call_id="c", request_type="t", result={"approved": True}, decided_by="rita", via="api",
                       decided_at=T0, on_behalf_of="amy",
                       votes=[{"voter": "fred", "approve": True}, {"voter": "amy", "by": "rita", "approve": True}])
    vote = _claimed("v", None, None)
    vote.votes = [{"voter": "fred", "approve": True, "at": T0.isoformat()}]
    plan: dict[str, WorkflowCheckpoint] = {
        "pa-1": make_checkpoint("pa-1", workflow="w1", status="completed", metadata={"started_by": "Ann"},
                                decisions=[decided]),
        "pa-2": make_checkpoint("pa-2", workflow="w2", requests=[vote], metadata={"started_by": "bob"}),
        "pa-3": make_checkpoint("pa-3", workflow="w1", metadata={"started_by": "ann"}),
        "pa-4": make_checkpoint("pa-4", workflow="w1"),
    }
    versions = {sid: await storage.save(cp, expected_version=None) for sid, cp in plan.items()}
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"participant": "ann"}, ["pa-1", "pa-3"]),
        ({"participant": "rita"}, ["pa-1"]),
        ({"participant": "amy"}, ["pa-1"]),
        ({"participant": "fred"}, ["pa-1", "pa-2"]),
        ({"participant": "bob"}, ["pa-2"]),
        ({"participant": "nobody"}, []),
        ({"participant": "an"}, []),
        ({"participant": "ann", "status": "pending"}, ["pa-3"]),
        ({"participant": "fred", "workflow": "w2"}, ["pa-2"]),
    ]
    for filters, want in cases:
        got = [s.session_id for s in await _all_sessions(storage, limit=1, **filters)]
        expect(got == want, f"list_sessions({filters}) -> {got}, expected {want}")
    later = plan["pa-4"].model_copy(update={"pending_requests": [vote]})
    await storage.save(later, expected_version=versions["pa-4"])
    got = [s.session_id for s in await _all_sessions(storage, limit=2, participant="fred")]
    expect(got == ["pa-1", "pa-2", "pa-4"], f"a vote saved later did not add the session to fred's: {got}")
    await storage.delete("pa-1")
    got = [s.session_id for s in await _all_sessions(storage, limit=5, participant="rita")]
    expect(got == [], f"a deleted session is still in rita's history: {got}")


@check
async def check_bad_continuation(backend: Backend) -> None:
    """A continuation token the storage did not issue is an InvalidContinuationError, never a crash."""
    storage = backend.storage
    await storage.save(make_checkpoint("tok-1", requests=[make_request("c1")]), expected_version=None)
    await storage.save(make_checkpoint("tok-2", requests=[make_request("c2")]), expected_version=None)
    bad = ["%%%not base64%%%", "bm90IGpzb24", encode_token(["only-one"])[:-3] + "~~~",
           "eyJhIjoxfQ",  # {"a":1}
           encode_token(["a", "b"]), encode_token([1, 2, 3]), encode_token([None, None, None]),
           encode_token([["x"], {"y": 1}, 3.5]), "ü"]
    for token in bad:
        exc = await expect_raises(InvalidContinuationError, storage.list_pending_requests(continuation=token),
                                  f"list_pending_requests(continuation={token!r})")
        expect(isinstance(exc, ValueError) and isinstance(exc, StorageError),
               "InvalidContinuationError must be a ValueError and a StorageError")
    for token in ["%%%", encode_token(["a", "b"]), encode_token([7]), encode_token([None]), "ü"]:
        await expect_raises(InvalidContinuationError, storage.list_sessions(continuation=token),
                            f"list_sessions(continuation={token!r})")


@check
async def check_audit(backend: Backend) -> None:
    """Audit records are appended with their save, listed in seq order, kept per session."""
    storage = backend.storage
    a1, a2, a3 = make_audit("aud", 1), make_audit("aud", 2, call_id="c1"), make_audit("aud", 3, action="cancel")
    v = await storage.save(make_checkpoint("aud"), expected_version=None, audit=[a1, a2])
    expect(await storage.list_audit("aud") == [a1, a2], "records of the first save are not listed")
    v = await storage.save(make_checkpoint("aud", superstep=1), expected_version=v)
    v = await storage.save(make_checkpoint("aud", superstep=2), expected_version=v, audit=[a3])
    got = await storage.list_audit("aud")
    expect(got == [a1, a2, a3], f"audit trail is {[(r.seq, r.action) for r in got]}")
    expect(all(r.at.tzinfo is not None for r in got), "audit timestamps must be tz-aware")
    other = make_audit("aud-other", 1, action="started")
    await storage.save(make_checkpoint("aud-other"), expected_version=None, audit=[other])
    expect(await storage.list_audit("aud-other") == [other], "audit trails of two sessions are mixed")
    expect(await storage.list_audit("aud") == [a1, a2, a3], "another session's save changed this audit trail")
    await expect_raises(ConcurrencyError, storage.save(make_checkpoint("aud"), expected_version="stale",
                                                       audit=[make_audit("aud", 4)]), "save with a stale version")
    expect([r.seq for r in await storage.list_audit("aud")] == [1, 2, 3],
           "a refused save appended its audit records")


@check
async def check_size_guard(backend: Backend) -> None:
    """A document over max_document_bytes (UTF-8 bytes) is refused before anything is written."""
    storage = backend.storage
    limit = getattr(storage, "max_document_bytes", None)
    expect(isinstance(limit, int) and limit > 0, f"max_document_bytes must be a positive int, got {limit!r}")
    assert isinstance(limit, int)

    def sized(nbytes: int, **fields: Any) -> WorkflowCheckpoint:
        """A checkpoint whose JSON is exactly ``nbytes`` UTF-8 bytes (mostly 2-byte characters)."""
        base = make_checkpoint("big", shared_state={"blob": ""}, **fields)
        room = nbytes - len(base.model_dump_json().encode("utf-8"))
        expect(room >= 0, f"max_document_bytes={limit} is too small for a minimal checkpoint")
        blob = "é" * (room // 2) + "x" * (room % 2)
        ck = make_checkpoint("big", shared_state={"blob": blob}, **fields)
        expect(len(ck.model_dump_json().encode("utf-8")) == nbytes, "size arithmetic is off")
        return ck

    v1 = await storage.save(make_checkpoint("big", superstep=1), expected_version=None)
    before = await _must_load(storage, "big", "before the oversized save")
    err = await expect_raises(CheckpointTooLargeError, storage.save(
        sized(limit + 1, superstep=2), expected_version=v1, audit=[make_audit("big", 1)]),
        f"save of a {limit + 1}-byte checkpoint with max_document_bytes={limit}")
    expect(isinstance(err, ValueError), "CheckpointTooLargeError must be a ValueError")
    expect(err.size == limit + 1 and err.limit == limit and err.session_id == "big",
           f"error carries size={err.size}, limit={err.limit}, session_id={err.session_id!r}")
    after = await _must_load(storage, "big", "after the refused save")
    expect(after.version == v1 and after.checkpoint == before.checkpoint, "the refused save changed the session")
    expect(await storage.list_audit("big") == [], "the refused save appended its audit records")
    await expect_raises(CheckpointTooLargeError, storage.save(
        sized(limit + 1).model_copy(update={"session_id": "big-new"}), expected_version=None),
        "create of an oversized session")
    expect(await storage.load("big-new") is None, "an oversized new session was stored")
    expect([s.session_id for s in (await storage.list_sessions()).items] == ["big"], "an oversized session is listed")
    exact = sized(limit, superstep=3)
    v2 = await storage.save(exact, expected_version=v1)
    stored = await _must_load(storage, "big", "a checkpoint of exactly max_document_bytes")
    expect(stored.version == v2 and stored.checkpoint == exact,
           "a checkpoint of exactly max_document_bytes must be stored intact")


@check
async def check_unicode(backend: Backend) -> None:
    """Session ids, workflow names, approvers and payloads may hold any Unicode and punctuation."""
    storage = backend.storage
    ids = ["ünïcödé-😀", 'quote"s\'and\\back/slash', "space and\ttab", "日本語/セッション", "a|b:c%2F..",
           "../../etc/passwd", "é" * 150 + "-long", "\u202eright-to-left", "emoji-👩🏽‍💻"]
    payload = {"text": "zero\u0000width\u200bline\u2028sep", "emoji": "👩‍👩‍👧‍👦🇺🇳", "quotes": "\"'`",
               "path": "a/b\\c", "rtl": "مرحبا", "keys": {"ключ": "значение", "😀": ["ü", "ß"]}}
    for n, sid in enumerate(ids):
        req = make_request(f"çall/{n}\"", created_at=T0 + dt.timedelta(seconds=n),
                           approvers=["reviewer@例え.jp", f"ü{n}"], data={"__type__": "x", "value": payload})
        ck = make_checkpoint(sid, workflow="wf:ü/1", requests=[req], shared_state=payload,
                             outputs=[sid])
        await storage.save(ck, expected_version=None, audit=[make_audit(sid, 1, call_id=req.call_id)])
    for n, sid in enumerate(ids):
        stored = await _must_load(storage, sid, f"unicode id {sid!r}")
        expect(stored.checkpoint.session_id == sid and stored.checkpoint.shared_state == payload
               and stored.checkpoint.outputs == [sid], f"session {sid!r} did not round-trip")
        audit = await storage.list_audit(sid)
        expect([(r.session_id, r.call_id) for r in audit] == [(sid, f"çall/{n}\"")],
               f"audit of {sid!r} is {audit}")
    listed = [s.session_id for s in await _all_sessions(storage, limit=4, workflow="wf:ü/1")]
    expect(listed == sorted(ids), f"unicode sessions listed as {listed}")
    inbox = _inbox_ids(await _all_inbox(storage, limit=4, assignee="reviewer@例え.jp", workflow="wf:ü/1"))
    expect(inbox == [(sid, f"çall/{n}\"") for n, sid in enumerate(ids)], f"unicode inbox is {inbox}")
    expect(_inbox_ids((await storage.list_pending_requests(assignee="ü3")).items) == [(ids[3], 'çall/3"')],
           "filter by a unicode assignee failed")
    stored = await _must_load(storage, ids[1], "before delete")
    expect(await storage.delete(ids[1], expected_version=stored.version) is True, "delete of a unicode id failed")
    expect(await storage.load(ids[1]) is None and await storage.load(ids[0]) is not None,
           "delete of one unicode id affected another")


@check
async def check_large_payload(backend: Backend) -> None:
    """A ~1 MB state (well under the limit) round-trips, and so does its update."""
    storage = backend.storage
    rows = [{"n": n, "text": f"row {n} ✓ " + "lorem ipsum " * 80, "vals": list(range(20))} for n in range(1000)]
    ck = make_checkpoint("large", shared_state={"rows": rows}, requests=[make_request("big-1", approvers=["ann"])])
    size = len(ck.model_dump_json().encode("utf-8"))
    expect(size > 1_000_000, f"the test checkpoint is only {size} bytes")
    v1 = await storage.save(ck, expected_version=None)
    stored = await _must_load(storage, "large", "large payload")
    expect(stored.checkpoint == ck, "a 1 MB checkpoint did not round-trip")
    rows[500]["text"] = "changed"
    ck2 = make_checkpoint("large", shared_state={"rows": rows})
    v2 = await storage.save(ck2, expected_version=v1)
    stored = await _must_load(storage, "large", "large payload update")
    expect(stored.version == v2 and stored.checkpoint.shared_state["rows"][500]["text"] == "changed",
           "an update of a 1 MB checkpoint was lost")


async def _race(label: str, n: int, expected: str | None, write: Callable[[int], Awaitable[str]]) -> tuple[int, str]:
    """Run ``write(0)`` … ``write(n - 1)`` at once, all expecting version ``expected``.

    Exactly one may win; every other must fail with a :class:`ConcurrencyError` that names
    ``expected`` and the winner's version. Returns the winner's index and its version.
    """

    async def attempt(i: int) -> str | BaseException:
        try:
            return await write(i)
        except ConcurrencyError as exc:
            return exc

    results = await asyncio.gather(*(attempt(i) for i in range(n)))
    wins = [(i, r) for i, r in enumerate(results) if isinstance(r, str)]
    losses = [r for r in results if isinstance(r, ConcurrencyError)]
    expect(len(wins) == 1, f"{label}: {len(wins)} of {n} concurrent saves won, expected exactly 1")
    expect(len(losses) == n - 1, f"{label}: {len(losses)} ConcurrencyErrors, expected {n - 1}")
    winner, version = wins[0]
    expect(all(e.expected == expected and e.actual == version for e in losses),
           f"{label}: losers must see expected={expected!r}, actual={version!r}: "
           f"{sorted({(e.expected, e.actual) for e in losses}, key=str)}")
    return winner, version


@check
async def check_concurrent_writers(backend: Backend) -> None:
    """N concurrent saves with the same expected version: exactly one wins, the rest conflict."""
    storage = backend.storage
    n = backend.concurrent_writers
    writers: list[CheckpointStorage] = [storage]
    if backend.second_storage is not None:
        writers.append(await backend.second_storage())
    try:
        v1 = await storage.save(make_checkpoint("race"), expected_version=None)

        async def attempt(i: int, expected: str | None, sid: str) -> str:
            return await writers[i % len(writers)].save(
                make_checkpoint(sid, metadata={"writer": i}), expected_version=expected,
                audit=[AuditRecord(session_id=sid, seq=1, action=f"writer-{i}")])

        for sid, expected in (("race", v1), ("race-create", None)):
            winner, version = await _race(sid, n, expected, partial(attempt, expected=expected, sid=sid))
            stored = await _must_load(storage, sid, "after the race")
            expect(stored.version == version and stored.checkpoint.metadata == {"writer": winner},
                   f"{sid}: the stored session is not the winner's")
            audit = await storage.list_audit(sid)
            expect([r.action for r in audit] == [f"writer-{winner}"],
                   f"{sid}: only the winner's audit record may be stored, got {[r.action for r in audit]}")
    finally:
        for extra in writers[1:]:
            await extra.close()


# -- approval policies: votes and claims on pending requests ---------------------------------------
def _vote(voter: str, approve: bool, second: int, **extra: Any) -> dict[str, Any]:
    return {"voter": voter, "approve": approve, "result": {"approved": approve, "comment": f"{voter} ✓"},
            "at": (T0 + dt.timedelta(seconds=second, microseconds=123456)).isoformat(), "via": "api", **extra}


def _policy_request(call_id: str = "vote-1", **fields: Any) -> PendingRequest:
    approval = {"quorum": 2, "veto": True, "voters": ["user:amy", "user:bob", "role:finance"],
                "exact": {"big": 2**63 + 1, "ratio": 0.1, "none": None}}
    return make_request(call_id, approvers=["user:amy", "user:bob", "role:finance"]).model_copy(
        update={"approval": approval, "subject": "user:eve", "resolved": True, **fields})


@check
async def check_approval_fields_round_trip(backend: Backend) -> None:
    """A pending request's approval policy, votes and claim come back exactly, from load and the inbox."""
    storage = backend.storage
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    request = _policy_request(
        votes=[_vote("user:amy", True, 1), _vote("user:bob", False, 2, via="link", on_behalf_of="user:cy")],
        claimed_by="user:amy", claimed_until=dt.datetime(2030, 1, 2, 9, 0, 0, 500000, tzinfo=india))
    decision = Decision(call_id="vote-0", request_type="tests.ApprovalRequest", result={"approved": True},
                        decided_by="user:ron", via="api", decided_at=T0, applied=True,
                        votes=[_vote("user:amy", True, 0), _vote("user:ron", True, 1)], on_behalf_of="user:amy")
    original = make_checkpoint("policy", requests=[request], decisions=[decision])
    v1 = await storage.save(original, expected_version=None)
    stored = await _must_load(storage, "policy", "approval fields")
    expect(stored.checkpoint == original, f"votes/claim/approval did not round-trip:\n{stored.checkpoint!r}")
    expect(stored.checkpoint.model_dump_json() == original.model_dump_json(), "the approval fields' JSON changed")
    loaded = stored.checkpoint.pending_requests[0]
    expect(loaded.claimed_until is not None and loaded.claimed_until.utcoffset() == dt.timedelta(hours=5, minutes=30),
           f"the claim's UTC offset must be kept, got {loaded.claimed_until!r}")
    expect(loaded.approval is not None and loaded.approval["exact"]["big"] == 2**63 + 1,
           f"integers in the approval policy must survive exactly: {loaded.approval!r}")
    for filters in ({}, {"assignee": "role:finance"}, {"assignees": ["user:bob", "user:zed"]}):
        entries = (await storage.list_pending_requests(**filters)).items
        expect([e.request for e in entries] == [request],
               f"the inbox {filters} must carry the votes and the claim: {[e.request for e in entries]!r}")
    # the claim ends, one more vote: the next save replaces both exactly
    moved = request.model_copy(update={"claimed_by": None, "claimed_until": None,
                                       "votes": [*request.votes, _vote("role:finance", True, 3)]})
    v2 = await storage.save(make_checkpoint("policy", requests=[moved]), expected_version=v1)
    stored = await _must_load(storage, "policy", "after the claim ended")
    expect(stored.version == v2 and stored.checkpoint.pending_requests == [moved],
           f"a released claim or a new vote was lost: {stored.checkpoint.pending_requests!r}")
    expect((await storage.list_pending_requests()).items[0].request == moved, "the inbox kept the old claim/votes")


@check
async def check_stale_vote_and_claim_conflict(backend: Backend) -> None:
    """Two writers from the same version: the second vote (or claim) written is a ConcurrencyError."""
    storage = backend.storage
    v1 = await storage.save(make_checkpoint("ballot", requests=[_policy_request()]), expected_version=None)
    first = await _must_load(storage, "ballot", "first voter's read")
    second = await _must_load(storage, "ballot", "second voter's read")
    expect(first.version == second.version == v1, "two reads of an unchanged session disagree on its version")
    first.checkpoint.pending_requests[0].votes.append(_vote("user:amy", True, 1))
    v2 = await storage.save(first.checkpoint, expected_version=first.version)
    second.checkpoint.pending_requests[0].votes.append(_vote("user:bob", False, 2))
    err = await expect_raises(ConcurrencyError, storage.save(second.checkpoint, expected_version=second.version),
                              "a vote written from a superseded version")
    expect(err.expected == v1 and err.actual == v2, f"the stale vote's conflict carries ({err.expected!r}, "
                                                    f"{err.actual!r}), expected ({v1!r}, {v2!r})")
    stored = await _must_load(storage, "ballot", "after the stale vote")
    expect([v["voter"] for v in stored.checkpoint.pending_requests[0].votes] == ["user:amy"],
           f"the stale vote overwrote the first one: {stored.checkpoint.pending_requests[0].votes}")
    # the loser reloads and votes again: both votes, in order
    stored.checkpoint.pending_requests[0].votes.append(_vote("user:bob", False, 2))
    v3 = await storage.save(stored.checkpoint, expected_version=stored.version)
    stored = await _must_load(storage, "ballot", "after the retried vote")
    expect(stored.version == v3 and [v["voter"] for v in stored.checkpoint.pending_requests[0].votes]
           == ["user:amy", "user:bob"], f"votes after a retry: {stored.checkpoint.pending_requests[0].votes}")
    # two claims from the same version: the first holds, the second conflicts
    amy = await _must_load(storage, "ballot", "amy's claim read")
    bob = await _must_load(storage, "ballot", "bob's claim read")
    until = T0 + dt.timedelta(minutes=15)
    amy.checkpoint.pending_requests[0].claimed_by, amy.checkpoint.pending_requests[0].claimed_until = "user:amy", until
    bob.checkpoint.pending_requests[0].claimed_by, bob.checkpoint.pending_requests[0].claimed_until = "user:bob", until
    v4 = await storage.save(amy.checkpoint, expected_version=amy.version)
    err = await expect_raises(ConcurrencyError, storage.save(bob.checkpoint, expected_version=bob.version),
                              "a claim written from a superseded version")
    expect(err.expected == v3 and err.actual == v4, f"the stale claim's conflict carries ({err.expected!r}, "
                                                    f"{err.actual!r})")
    claimed = (await _must_load(storage, "ballot", "after the claims")).checkpoint.pending_requests[0]
    expect((claimed.claimed_by, claimed.claimed_until) == ("user:amy", until) and len(claimed.votes) == 2,
           f"the stale claim changed the request: {claimed!r}")


# -- delegations (out of office) -------------------------------------------------------------------
@check
async def check_delegation_round_trip(backend: Backend) -> None:
    """A delegation comes back as saved (offsets, microseconds, any text), with the version save returned."""
    storage = _delegations(backend.storage)
    now = backend_now(backend)
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    original = Delegation(
        delegator="amy", delegate="ron", starts_at=(now - dt.timedelta(hours=2)).replace(microsecond=123456),
        ends_at=(now + dt.timedelta(days=3)).astimezone(india).replace(microsecond=654321),
        reason='Vacances d\'été ✈ "quoted"\nline 2 \u2028 😀', set_by="admin:root",
        set_at=(now - dt.timedelta(minutes=1)).replace(microsecond=1))
    version = await storage.save_delegation(original, expected_version=None)
    expect(isinstance(version, str) and version != "", f"save_delegation must return a version string, got {version!r}")
    stored = await _must_load_delegation(storage, "amy", "round trip")
    expect(stored.version == version, f"load_delegation returned version {stored.version!r}, save {version!r}")
    expect(stored.delegation == original, f"round trip changed the delegation:\n{stored.delegation!r}")
    expect(stored.delegation.model_dump_json() == original.model_dump_json(), "round trip changed the JSON form")
    expect(stored.delegation.ends_at.utcoffset() == dt.timedelta(hours=5, minutes=30),
           f"the UTC offset must be kept, got {stored.delegation.ends_at.isoformat()}")
    expect(await storage.list_delegations() == [original], "the delegation is not listed as saved")
    expect(await storage.list_delegations(delegate="ron") == [original], "the delegation is not listed for ron")
    expect(await storage.load_delegation("ron") is None, "the delegate has no delegation of their own")
    original.reason = "changed after saving"
    again = await _must_load_delegation(storage, "amy", "isolation")
    expect(again.delegation.reason.startswith("Vacances"), "mutating the saved object changed the stored delegation")


@check
async def check_delegation_create_only(backend: Backend) -> None:
    """expected_version=None creates; while a delegation lasts it is a conflict and writes nothing."""
    storage = _delegations(backend.storage)
    now = backend_now(backend)
    first = make_delegation("amy", "ron", now=now)
    v1 = await storage.save_delegation(first, expected_version=None)
    err = await expect_raises(ConcurrencyError, storage.save_delegation(
        make_delegation("amy", "sam", now=now), expected_version=None), "a second create of amy's delegation")
    expect(err.expected is None and err.actual == v1,
           f"ConcurrencyError must carry expected=None, actual={v1!r}; got {err.expected!r}, {err.actual!r}")
    stored = await _must_load_delegation(storage, "amy", "after the refused create")
    expect(stored.version == v1 and stored.delegation == first, "a refused create overwrote the delegation")
    expect(await _delegators(storage, "sam") == [], "a refused create is listed under its delegate")
    expect(await _delegators(storage, "ron") == ["amy"], "a refused create unlisted the stored delegation")


@check
async def check_delegation_versions(backend: Backend) -> None:
    """Only the current version replaces a delegation; the error names expected and actual versions."""
    storage = _delegations(backend.storage)
    now = backend_now(backend)
    v1 = await storage.save_delegation(make_delegation("amy", "ron", now=now), expected_version=None)
    second = make_delegation("amy", "sam", now=now, reason="longer trip", ends_in=2 * 86_400)
    v2 = await storage.save_delegation(second, expected_version=v1)
    expect(v2 != v1, f"a replace must yield a new version, got {v2!r} twice")
    stored = await _must_load_delegation(storage, "amy", "after the replace")
    expect(stored.version == v2 and stored.delegation == second, "the replace did not store the new delegation")
    for wrong in (v1, "not-a-version", v2 + "0", ""):
        err = await expect_raises(ConcurrencyError, storage.save_delegation(
            make_delegation("amy", "zed", now=now), expected_version=wrong), f"save_delegation with version {wrong!r}")
        expect(err.expected == wrong and err.actual == v2,
               f"expected=({wrong!r}, {v2!r}), got ({err.expected!r}, {err.actual!r})")
    stored = await _must_load_delegation(storage, "amy", "after the conflicts")
    expect(stored.version == v2 and stored.delegation == second, "a conflicting save changed the delegation")
    err = await expect_raises(ConcurrencyError, storage.save_delegation(
        make_delegation("nobody", "ron", now=now), expected_version=v1), "update of a delegation that does not exist")
    expect(err.actual is None, f"conflict on a missing delegation must say actual=None, got {err.actual!r}")
    expect(await storage.load_delegation("nobody") is None, "an update of a missing delegation created it")
    third = make_delegation("amy", "tia", now=now)
    v3 = await storage.save_delegation(third, expected_version=v2)
    expect(len({v1, v2, v3}) == 3, f"versions repeat: {[v1, v2, v3]}")
    expect((await _must_load_delegation(storage, "amy", "third")).version == v3, "load does not report the new version")
    for delegate, want in (("ron", []), ("sam", []), ("tia", ["amy"]), ("zed", [])):
        got = await _delegators(storage, delegate)
        expect(got == want, f"after replaces, delegations to {delegate} list {got}, expected {want}")


@check
async def check_delegation_delete(backend: Backend) -> None:
    """delete_delegation ends it now, honours expected_version, and is False when there is none."""
    storage = _delegations(backend.storage)
    now = backend_now(backend)
    expect(await storage.delete_delegation("nobody") is False, "delete of a missing delegation must return False")
    expect(await storage.delete_delegation("nobody", expected_version="1") is False,
           "delete of a missing delegation with a version must return False")
    v1 = await storage.save_delegation(make_delegation("amy", "ron", now=now), expected_version=None)
    v2 = await storage.save_delegation(make_delegation("amy", "sam", now=now), expected_version=v1)
    bob = make_delegation("bob", "sam", now=now)
    await storage.save_delegation(bob, expected_version=None)
    err = await expect_raises(ConcurrencyError, storage.delete_delegation("amy", expected_version=v1),
                              "delete_delegation with a stale version")
    expect(err.expected == v1 and err.actual == v2, f"delete conflict carries ({err.expected!r}, {err.actual!r})")
    expect((await _must_load_delegation(storage, "amy", "after the refused delete")).version == v2,
           "a refused delete removed the delegation")
    expect(await storage.delete_delegation("amy", expected_version=v2) is True, "delete with the current version")
    expect(await storage.load_delegation("amy") is None, "a deleted delegation still loads")
    expect(await storage.list_delegations() == [bob], "a deleted delegation is still listed")
    expect(await _delegators(storage, "sam") == ["bob"], "a deleted delegation is still listed for its delegate")
    expect(await storage.delete_delegation("amy") is False, "a second delete must return False")
    expect(await storage.delete_delegation("bob") is True, "delete without expected_version must succeed")
    expect(await storage.list_delegations() == [], "unconditional delete left a delegation listed")
    again = make_delegation("amy", "ron", now=now, reason="back again")
    v_new = await storage.save_delegation(again, expected_version=None)
    stored = await _must_load_delegation(storage, "amy", "re-created after delete")
    expect(stored.version == v_new and stored.delegation == again, "re-creating a deleted delegation failed")


@check
async def check_delegation_listing(backend: Backend) -> None:
    """list_delegations orders by delegator, filters by delegate, lists ones that start later too."""
    storage = _delegations(backend.storage)
    now = backend_now(backend)
    plan = [("dan", "ron"), ("amy", "ron"), ("cy", "sam"), ("bob", "ron"), ("eve", "sam"), ("fay", "tia")]
    saved = {a: make_delegation(a, b, now=now) for a, b in plan}
    saved["gus"] = make_delegation("gus", "ron", now=now, starts_at=now + dt.timedelta(days=1),
                                   ends_at=now + dt.timedelta(days=8))  # not started yet: listed all the same
    for delegation in saved.values():
        await storage.save_delegation(delegation, expected_version=None)
    everything = await storage.list_delegations()
    expect(everything == [saved[a] for a in sorted(saved)],
           f"delegations must be ordered by delegator and complete: {[d.delegator for d in everything]}")
    cases = [("ron", ["amy", "bob", "dan", "gus"]), ("sam", ["cy", "eve"]), ("tia", ["fay"]), ("amy", []),
             ("ro", []), ("", [])]
    for delegate, want in cases:
        got = await storage.list_delegations(delegate=delegate)
        expect(got == [saved[a] for a in want],
               f"list_delegations(delegate={delegate!r}) -> {[d.delegator for d in got]}, expected {want}")


@check
async def check_delegation_ended_never_returned(backend: Backend) -> None:
    """A delegation whose ends_at has passed is never loaded or listed, and counts as absent when creating."""
    storage = _delegations(backend.storage)
    now = backend_now(backend)
    kept = make_delegation("bob", "ron", now=now)
    await storage.save_delegation(kept, expected_version=None)
    ended = make_delegation("amy", "ron", now=now, starts_at=now - dt.timedelta(days=3),
                            ends_at=now - dt.timedelta(seconds=5))
    v_ended = await storage.save_delegation(ended, expected_version=None)
    expect(isinstance(v_ended, str) and v_ended != "", "saving an ended delegation must still return a version")
    expect(await storage.load_delegation("amy") is None, "an ended delegation loads")
    expect(await storage.list_delegations() == [kept], "an ended delegation is listed")
    expect(await _delegators(storage, "ron") == ["bob"], "an ended delegation is listed for its delegate")
    expect(await storage.delete_delegation("amy") is False, "delete of an ended delegation must return False")
    err = await expect_raises(ConcurrencyError, storage.save_delegation(
        make_delegation("amy", "sam", now=now), expected_version=v_ended), "update of an ended delegation")
    expect(err.actual is None, f"an ended delegation's actual version must be None, got {err.actual!r}")
    fresh = make_delegation("amy", "sam", now=now)
    v_fresh = await storage.save_delegation(fresh, expected_version=None)
    stored = await _must_load_delegation(storage, "amy", "created over an ended delegation")
    expect(stored.version == v_fresh and stored.delegation == fresh, "creating over an ended delegation failed")
    expect(await _delegators(storage, "sam") == ["amy"] and await _delegators(storage, "ron") == ["bob"],
           "delegations listed by delegate after re-creating over an ended one")
    if backend.clock is not None:  # ends_at exactly now has ended (the period is [starts_at, ends_at))
        await storage.save_delegation(make_delegation("cy", "ron", now=now, ends_in=0), expected_version=None)
        expect(await storage.load_delegation("cy") is None, "a delegation ending exactly now loads")
        expect(await _delegators(storage) == ["amy", "bob"], "a delegation ending exactly now is listed")


@check
async def check_delegation_expiry(backend: Backend) -> None:
    """A delegation disappears when its ends_at passes: from load, listings and conditional writes."""
    storage = _delegations(backend.storage)
    if not backend.can_expire:
        return
    now = backend_now(backend)
    short = make_delegation("amy", "ron", now=now, ends_in=1)
    long = make_delegation("bob", "ron", now=now)
    v_short = await storage.save_delegation(short, expected_version=None)
    await storage.save_delegation(long, expected_version=None)
    await backend.advance(0.5)
    expect(await storage.load_delegation("amy") is not None, "a delegation ended before its ends_at")
    expect(await _delegators(storage, "ron") == ["amy", "bob"], "a live delegation is not listed")
    await backend.advance(0.7)
    expect(await storage.load_delegation("amy") is None, "a delegation outlived its ends_at")
    expect(await storage.list_delegations() == [long], "an expired delegation is still listed")
    expect(await storage.list_delegations(delegate="ron") == [long], "an expired delegation is listed for ron")
    expect(await storage.delete_delegation("amy") is False, "delete of an expired delegation must return False")
    err = await expect_raises(ConcurrencyError, storage.save_delegation(short, expected_version=v_short),
                              "update of an expired delegation")
    expect(err.actual is None, f"an expired delegation's actual version must be None, got {err.actual!r}")
    renewed = make_delegation("amy", "sam", now=backend_now(backend))
    await storage.save_delegation(renewed, expected_version=None)
    expect(await storage.list_delegations() == [renewed, long], "a delegation re-created after expiry is not listed")
    expect(await _delegators(storage, "sam") == ["amy"] and await _delegators(storage, "ron") == ["bob"],
           "delegations by delegate after re-creating an expired one")


@check
async def check_delegation_concurrent_writers(backend: Backend) -> None:
    """N concurrent create-only saves of one delegation: exactly one wins; the same for N replaces."""
    storage = _delegations(backend.storage)
    n = backend.concurrent_writers
    extras: list[CheckpointStorage] = []
    if backend.second_storage is not None:
        extras.append(await backend.second_storage())
    writers: list[DelegationStorage] = [storage, *(_delegations(e) for e in extras)]
    now = backend_now(backend)
    try:
        async def attempt(i: int, expected: str | None, round_: int) -> str:
            return await writers[i % len(writers)].save_delegation(
                make_delegation("amy", f"r{round_}-d{i}", now=now), expected_version=expected)

        expected: str | None = None
        for round_ in (1, 2):
            winner, version = await _race(f"round {round_}", n, expected,
                                          partial(attempt, expected=expected, round_=round_))
            stored = await _must_load_delegation(storage, "amy", f"after round {round_}")
            expect(stored.version == version and stored.delegation.delegate == f"r{round_}-d{winner}",
                   f"round {round_}: the stored delegation is not the winner's")
            expect(await _delegators(storage, f"r{round_}-d{winner}") == ["amy"],
                   f"round {round_}: the winner's delegate does not list it")
            for loser in [i for i in range(n) if i != winner][:3]:
                expect(await _delegators(storage, f"r{round_}-d{loser}") == [],
                       f"round {round_}: a losing writer's delegate lists the delegation")
            expected = version
        expect([d.delegate for d in await storage.list_delegations()] == [stored.delegation.delegate],
               "after the races, exactly the last winner is listed")
    finally:
        for extra in extras:
            await extra.close()


@check
async def check_delegation_unicode(backend: Backend) -> None:
    """Delegator and delegate ids may hold any Unicode and punctuation, and any length."""
    storage = _delegations(backend.storage)
    now = backend_now(backend)
    ids = ["ünïcödé-😀", 'quote"s\'and\\back/slash', "space and\ttab", "日本語/委任", "a|b:c%2F..",
           "../../etc/passwd", "é" * 150 + "-long", "\u202eright-to-left", "emoji-👩🏽‍💻", "x" * 300, "..",
           "~delegations", "delegation:amy", "role:finance#1?"]
    delegates = ["délégué/😀", "reviewer@例え.jp", 'q"uote']
    saved = {d: make_delegation(d, delegates[n % 3], now=now, reason=f"für {d}") for n, d in enumerate(ids)}
    versions = {d: await storage.save_delegation(x, expected_version=None) for d, x in saved.items()}
    for d, x in saved.items():
        stored = await _must_load_delegation(storage, d, f"unicode delegator {d!r}")
        expect(stored.delegation == x and stored.version == versions[d], f"the delegation of {d!r} did not round-trip")
    expect(await _delegators(storage) == sorted(ids), f"unicode delegators listed as {await _delegators(storage)}")
    for n, delegate in enumerate(delegates):
        want = sorted(ids[n::3])
        got = await storage.list_delegations(delegate=delegate)
        expect(got == [saved[d] for d in want], f"delegations to {delegate!r}: {[d.delegator for d in got]}")
    expect(await storage.delete_delegation(ids[1], expected_version=versions[ids[1]]) is True,
           "delete of a unicode delegator failed")
    expect(await storage.load_delegation(ids[1]) is None and await storage.load_delegation(ids[0]) is not None,
           "delete of one unicode delegator affected another")
    expect(await _delegators(storage) == sorted(i for i in ids if i != ids[1]), "a deleted unicode delegator is listed")
