"""Agent Framework's CheckpointStorage on hitl's backends: one conformance suite, real servers.

Every test runs on each backend: ``sqlite`` (a file in tmp_path), ``redis`` (the session's real
redis-server), ``cosmos`` (the Cosmos DB stand-in as it is: the storage's sequential stand-in path)
and ``cosmos-batch`` (the stand-in behind the recording proxy that makes it answer like Azure, so
the storage's transactional-batch path runs). SQLite and Cosmos read a hand-moved clock; Redis
expires keys on its own clock, so its TTL test sleeps just over one second.

The Agent Framework tests run a real AF 1.23 workflow (``ExpenseApproval`` below: a manager approves,
then finance approves amounts over 1000) through the storages: it pauses, is resumed in a new Python
process (``resume_in_child``), pauses again, and is resumed here; and one pause is resumed by two
workflow instances at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agent_framework import (
    Executor,
    Workflow,
    WorkflowBuilder,
    WorkflowCheckpoint,
    WorkflowCheckpointException,
    WorkflowContext,
    WorkflowRunResult,
    WorkflowRunState,
    handler,
    response_handler,
)

from hitl_core.agent_framework.checkpoint_storage import (
    CheckpointConflictError,
    CosmosAgentCheckpointStorage,
    RedisAgentCheckpointStorage,
    SqliteAgentCheckpointStorage,
    StaleCheckpointError,
    abort_on_stale_checkpoint,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
Storage = SqliteAgentCheckpointStorage | RedisAgentCheckpointStorage | CosmosAgentCheckpointStorage


# -- the workflow: written as Agent Framework's docs teach, nothing hitl-specific ---------------------
@dataclass
class ExpenseRequest:
    """The request payload: a dataclass, so AF pickles it and the storages must allow the type."""

    employee: str
    amount: int
    level: str = "manager"


@dataclass
class Receipt:
    """A type that no storage allows unless told to (the blocked-type test)."""

    number: int


#: Every answer a response handler of this process acted on (the side effect that must happen once).
HANDLED: list[str] = []
ALLOWED = [f"{__name__}:ExpenseRequest"]
WORKFLOW = "expense-approval"


class ExpenseApproval(Executor):
    @handler
    async def submit(self, expense: ExpenseRequest, ctx: WorkflowContext) -> None:
        await ctx.request_info(expense, str)

    @response_handler
    async def decided(self, expense: ExpenseRequest, answer: str, ctx: WorkflowContext[None, str]) -> None:
        HANDLED.append(f"{expense.level}:{answer}")
        if answer == "approve" and expense.level == "manager" and expense.amount > 1000:
            await ctx.request_info(ExpenseRequest(expense.employee, expense.amount, "finance"), str)
            return
        await ctx.yield_output(f"{expense.employee} {expense.amount}: {answer} by {expense.level}")


def build_workflow() -> Workflow:
    """A new instance per run (AF refuses concurrent runs of one instance); the fixed name keeps
    checkpoints findable from another process."""
    return WorkflowBuilder(name=WORKFLOW, start_executor=ExpenseApproval(id="approval")).build()


# -- backends -----------------------------------------------------------------------------------------
class ManualClock:
    """A clock the test moves by hand (``clock=`` of the SQLite and Cosmos storages)."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def open_storage(settings: dict[str, Any], *, scope: str, ttl_seconds: int | None = None,
                 allowed: list[str] | None = ALLOWED, clock: Callable[[], float] = time.time) -> Storage:
    """A storage over the backend ``settings`` describe (plain JSON, so a child process can open it too)."""
    kind = settings["kind"]
    if kind == "sqlite":
        return SqliteAgentCheckpointStorage(settings["path"], scope=scope, ttl_seconds=ttl_seconds,
                                            allowed_checkpoint_types=allowed, clock=clock)
    if kind == "redis":
        return RedisAgentCheckpointStorage(settings["url"], scope=scope, key_prefix=settings["key_prefix"],
                                           ttl_seconds=ttl_seconds, allowed_checkpoint_types=allowed)
    return CosmosAgentCheckpointStorage.from_endpoint(
        settings["endpoint"], scope=scope, key=settings["key"], database=settings["database"],
        container=settings["container"], stand_in=settings["stand_in"], create_if_missing=True,
        ttl_seconds=ttl_seconds, allowed_checkpoint_types=allowed, clock=clock,
        retry_total=2, retry_backoff_max=1, connection_timeout=5)


@dataclass
class Backend:
    name: str
    settings: dict[str, Any]
    #: The clock SQLite and Cosmos read; None for Redis, which expires keys on its own clock.
    clock: ManualClock | None
    opened: list[Storage] = field(default_factory=list)

    def open(self, *, scope: str = "tenant-a", ttl_seconds: int | None = None,
             allowed: list[str] | None = ALLOWED) -> Storage:
        """Another storage over the same data: another process's view of it."""
        storage = open_storage(self.settings, scope=scope, ttl_seconds=ttl_seconds, allowed=allowed,
                               clock=self.clock or time.time)
        self.opened.append(storage)
        return storage

    async def pass_time(self, seconds: float) -> None:
        if self.clock is None:
            await asyncio.sleep(seconds)
        else:
            self.clock.advance(seconds)


@pytest.fixture(params=["sqlite", "redis", "cosmos", "cosmos-batch"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A fresh, empty backend of each kind; servers start only when a test of theirs runs."""
    name: str = request.param
    proxy = None
    if name == "sqlite":
        made = Backend(name, {"kind": "sqlite", "path": str(tmp_path / "af.db")}, ManualClock())
    elif name == "redis":
        made = Backend(name, {"kind": "redis", "url": request.getfixturevalue("redis_url"),
                              "key_prefix": f"af-test-{uuid.uuid4().hex[:10]}:"}, None)
    else:
        # Both Cosmos variants talk through the recording proxy, which sees every request (the
        # child process's too); "cosmos-batch" also makes the stand-in answer like Azure.
        from tests.storage_cosmos.cosmos_proxy import CosmosProxy

        server = request.getfixturevalue("cosmos_server")
        proxy = CosmosProxy(server.endpoint, emulate_azure=name == "cosmos-batch")
        endpoint = await proxy.start()
        made = Backend(name, {"kind": "cosmos", "endpoint": endpoint, "key": server.key, "database": "af-tests",
                              "container": f"c-{uuid.uuid4().hex[:12]}", "stand_in": name == "cosmos"},
                       ManualClock())
    yield made
    for storage in made.opened:
        if isinstance(storage, RedisAgentCheckpointStorage):
            keys = [k async for k in storage.client.scan_iter(match=f"{made.settings['key_prefix']}*", count=1000)]
            if keys:
                await storage.client.delete(*keys)
        await storage.close()
    if proxy is not None:
        await proxy.stop()
        # Every data-plane request named its scope's partition: point operations, batches and
        # queries alike (no cross-partition query, no fan-out).
        data = [r for r in proxy.requests if r.kind not in ("meta", "query_plan")]
        assert data and all(r.partition_key and r.partition_key.startswith('["') for r in data), \
            [(r.kind, r.path, r.partition_key) for r in data if not r.partition_key]
        assert not any(r.kind == "query_plan" or r.cross_partition for r in proxy.requests)
        ops = proxy.ops()
        if name == "cosmos-batch":  # a checkpoint and its head travel in one transactional batch
            assert ops["create"] == 0 and ops["replace"] == 0, ops
        else:  # the stand-in cannot replace inside a batch: create, then replace the head
            assert ops["batch"] == 0, ops


def checkpoint(cid: str, previous: str | None, second: int, *, workflow: str = "wf",
               state: dict[str, Any] | None = None) -> WorkflowCheckpoint:
    return WorkflowCheckpoint(workflow_name=workflow, graph_signature_hash="graph-1", checkpoint_id=cid,
                              previous_checkpoint_id=previous, timestamp=f"2026-03-01T10:00:{second:02d}+00:00",
                              state=state if state is not None else {"step": second}, iteration_count=second)


# -- the protocol -------------------------------------------------------------------------------------
async def test_save_load_list_latest_delete(backend: Backend) -> None:
    storage = backend.open()
    state = {"plain": {"n": 1, "s": "x", "items": [1, 2.5, None, True]}, "pair": (1, 2),
             "when": dt.datetime(2026, 3, 1, tzinfo=dt.UTC), "expense": ExpenseRequest("erin", 5000)}
    assert await storage.save(checkpoint("c1", None, 1, state=state)) == "c1"
    await storage.save(checkpoint("c2", "c1", 2))
    await storage.save(checkpoint("c3", "c2", 3))
    await storage.save(checkpoint("o1", None, 4, workflow="other"))

    loaded = await storage.load("c1")
    assert (loaded.workflow_name, loaded.previous_checkpoint_id, loaded.iteration_count) == ("wf", None, 1)
    assert loaded.state == state and isinstance(loaded.state["pair"], tuple)
    assert (await storage.load("c2")).previous_checkpoint_id == "c1"
    assert await storage.list_checkpoint_ids(workflow_name="wf") == ["c1", "c2", "c3"]
    assert [c.checkpoint_id for c in await storage.list_checkpoints(workflow_name="wf")] == ["c1", "c2", "c3"]
    assert await storage.list_checkpoint_ids(workflow_name="other") == ["o1"]
    latest = await storage.get_latest(workflow_name="wf")
    assert latest is not None and latest.checkpoint_id == "c3"

    # Stored as JSON text in AF's encoding: JSON-native values plain, the rest AF's pickle marker.
    text = await storage._load_text("c1")
    assert text is not None
    document = json.loads(text)
    assert document["state"]["plain"] == {"n": 1, "s": "x", "items": [1, 2.5, None, True]}
    assert set(document["state"]["pair"]) == {"__pickled__", "__type__"}
    assert document["state"]["expense"]["__type__"] == f"{__name__}:ExpenseRequest"

    assert await storage.delete("c3") is True
    assert await storage.delete("c3") is False
    with pytest.raises(WorkflowCheckpointException):
        await storage.load("c3")
    assert await storage.list_checkpoint_ids(workflow_name="wf") == ["c1", "c2"]
    # The head was deleted: the newest checkpoint left is the latest, and the next save may continue it.
    latest = await storage.get_latest(workflow_name="wf")
    assert latest is not None and latest.checkpoint_id == "c2"
    await storage.save(checkpoint("c4", "c2", 5))
    latest = await storage.get_latest(workflow_name="wf")
    assert latest is not None and latest.checkpoint_id == "c4"


async def test_unknown_ids_and_workflows(backend: Backend) -> None:
    storage = backend.open()
    with pytest.raises(WorkflowCheckpointException, match="No checkpoint found with ID nope"):
        await storage.load("nope")
    assert await storage.get_latest(workflow_name="wf") is None
    assert await storage.list_checkpoints(workflow_name="wf") == []
    assert await storage.list_checkpoint_ids(workflow_name="wf") == []
    assert await storage.delete("nope") is False


async def test_checkpoints_are_immutable(backend: Backend) -> None:
    storage = backend.open()
    await storage.save(checkpoint("c1", None, 1))
    await storage.save(checkpoint("c2", "c1", 2))
    # An identical re-save (a retried call) is accepted and changes nothing, even behind the head.
    assert await storage.save(checkpoint("c1", None, 1)) == "c1"
    assert await storage.save(checkpoint("c2", "c1", 2)) == "c2"
    with pytest.raises(CheckpointConflictError, match="'c1' already exists in scope 'tenant-a'"):
        await storage.save(checkpoint("c1", None, 1, state={"step": "changed"}))
    assert (await storage.load("c1")).state == {"step": 1}
    assert await storage.list_checkpoint_ids(workflow_name="wf") == ["c1", "c2"]
    latest = await storage.get_latest(workflow_name="wf")
    assert latest is not None and latest.checkpoint_id == "c2"


async def test_scopes_are_isolated(backend: Backend) -> None:
    tenant_a, tenant_b = backend.open(scope="tenant-a"), backend.open(scope="tenant-b")
    await tenant_a.save(checkpoint("c1", None, 1, state={"who": "a"}))
    await tenant_a.save(checkpoint("c2", "c1", 2))
    assert await tenant_b.get_latest(workflow_name="wf") is None
    assert await tenant_b.list_checkpoint_ids(workflow_name="wf") == []
    with pytest.raises(WorkflowCheckpointException):
        await tenant_b.load("c1")
    assert await tenant_b.delete("c1") is False

    # The same ids in the other scope: their own documents and their own head.
    await tenant_b.save(checkpoint("c1", None, 1, state={"who": "b"}))
    await tenant_b.save(checkpoint("x2", "c1", 3))
    assert (await tenant_a.load("c1")).state == {"who": "a"}
    assert (await tenant_b.load("c1")).state == {"who": "b"}
    assert await tenant_a.list_checkpoint_ids(workflow_name="wf") == ["c1", "c2"]
    assert await tenant_b.list_checkpoint_ids(workflow_name="wf") == ["c1", "x2"]
    latest_a, latest_b = await tenant_a.get_latest(workflow_name="wf"), await tenant_b.get_latest(workflow_name="wf")
    assert latest_a is not None and latest_a.checkpoint_id == "c2"
    assert latest_b is not None and latest_b.checkpoint_id == "x2"
    assert await tenant_b.delete("c1") is True
    assert (await tenant_a.load("c1")).state == {"who": "a"}

    # A scope with the characters keys and ids are built from (a Redis hash tag's braces, Cosmos' '/').
    odd = backend.open(scope="t/{x}:%1")
    await odd.save(checkpoint("c1", None, 1, state={"who": "odd"}))
    assert (await odd.load("c1")).state == {"who": "odd"}
    assert await odd.list_checkpoint_ids(workflow_name="wf") == ["c1"]
    assert (await tenant_a.load("c1")).state == {"who": "a"}


async def test_ttl_expires_checkpoints_and_head(backend: Backend) -> None:
    ttl = 1 if backend.clock is None else 60
    storage = backend.open(ttl_seconds=ttl)
    forever = backend.open(scope="tenant-forever")  # without a TTL nothing expires
    await forever.save(checkpoint("f1", None, 1))
    await storage.save(checkpoint("c1", None, 1))
    await storage.save(checkpoint("c2", "c1", 2))
    assert await storage.list_checkpoint_ids(workflow_name="wf") == ["c1", "c2"]
    if isinstance(storage, RedisAgentCheckpointStorage):
        for key in (storage.checkpoint_key("c2"), storage.head_key("wf"), storage.ids_key("wf")):
            assert 0 < await storage.client.pttl(key) <= 1000
    if isinstance(storage, CosmosAgentCheckpointStorage):
        # The stand-in stores ``ttl`` but never deletes anything, so Cosmos' own expiry cannot be
        # observed here: assert the field Azure acts on, and that ``expires_at`` makes reads exact.
        for item_id in ("cp:c2", "head:wf"):
            raw = await storage._read(item_id)
            assert raw is not None and raw["ttl"] == 60 and backend.clock is not None
            assert raw["expires_at"] == pytest.approx(backend.clock() + 60)

    await backend.pass_time(ttl + 0.1)
    with pytest.raises(WorkflowCheckpointException):
        await storage.load("c2")
    assert await storage.list_checkpoint_ids(workflow_name="wf") == []
    assert await storage.list_checkpoints(workflow_name="wf") == []
    assert await storage.get_latest(workflow_name="wf") is None
    # An expired head no longer fences: a continuation of the expired lineage may start a new head.
    await storage.save(checkpoint("c3", "c2", 3))
    assert await storage.list_checkpoint_ids(workflow_name="wf") == ["c3"]
    if isinstance(storage, SqliteAgentCheckpointStorage):  # the save swept the expired rows
        rows = storage._db.execute("SELECT scope, checkpoint_id FROM af_checkpoints ORDER BY scope").fetchall()
        assert rows == [("tenant-a", "c3"), ("tenant-forever", "f1")]
    assert (await forever.load("f1")).checkpoint_id == "f1"


async def test_types_outside_the_allow_list_do_not_load(backend: Backend) -> None:
    receipt_type = f"{__name__}:Receipt"
    writer = backend.open(allowed=[receipt_type])
    await writer.save(checkpoint("r1", None, 1, state={"receipt": Receipt(42)}))

    strict = backend.open(allowed=None)
    with pytest.raises(WorkflowCheckpointException) as refused:
        await strict.load("r1")
    assert "'r1'" in str(refused.value) and receipt_type in str(refused.value)
    assert "allowed_checkpoint_types" in str(refused.value)
    assert await strict.list_checkpoints(workflow_name="wf") == []  # left out, with a warning
    # A save this storage could not load back is refused before anything is written.
    with pytest.raises(WorkflowCheckpointException, match="would not load back"):
        await strict.save(checkpoint("r2", "r1", 2, state={"receipt": Receipt(7)}))
    assert await writer.list_checkpoint_ids(workflow_name="wf") == ["r1"]

    assert (await writer.load("r1")).state == {"receipt": Receipt(42)}
    allowed_reader = backend.open(allowed=[receipt_type])
    assert (await allowed_reader.load("r1")).state["receipt"] == Receipt(42)


async def test_a_stale_writer_is_refused_and_writes_nothing(backend: Backend) -> None:
    storage = backend.open()
    await storage.save(checkpoint("c1", None, 1))
    await storage.save(checkpoint("a2", "c1", 2))
    with pytest.raises(StaleCheckpointError) as stale:
        await storage.save(checkpoint("b2", "c1", 3))
    error = stale.value
    assert isinstance(error, WorkflowCheckpointException)
    assert (error.previous_checkpoint_id, error.head_checkpoint_id, error.checkpoint_id) == ("c1", "a2", "b2")
    assert "'b2'" in str(error) and "continues from 'c1'" in str(error) and "is now 'a2'" in str(error)
    latest = await storage.get_latest(workflow_name="wf")
    assert latest is not None and latest.checkpoint_id == "a2"
    assert await storage.list_checkpoint_ids(workflow_name="wf") == ["c1", "a2"]
    with pytest.raises(WorkflowCheckpointException):
        await storage.load("b2")
    # The winner's lineage goes on; a fresh run (previous None) starts a new lineage and head.
    await storage.save(checkpoint("a3", "a2", 4))
    await storage.save(checkpoint("n1", None, 5))
    with pytest.raises(StaleCheckpointError):
        await storage.save(checkpoint("a4", "a3", 6))
    latest = await storage.get_latest(workflow_name="wf")
    assert latest is not None and latest.checkpoint_id == "n1"

    # Two processes racing from the same checkpoint: exactly one gets in.
    first, second = backend.open(), backend.open()
    await first.save(checkpoint("p1", None, 10, workflow="race"))
    results = await asyncio.gather(first.save(checkpoint("x2", "p1", 11, workflow="race")),
                                   second.save(checkpoint("y2", "p1", 12, workflow="race")), return_exceptions=True)
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1 and sum(isinstance(r, StaleCheckpointError) for r in results) == 1
    latest = await second.get_latest(workflow_name="race")
    assert latest is not None and latest.checkpoint_id == winners[0]
    assert await first.list_checkpoint_ids(workflow_name="race") == ["p1", winners[0]]


# -- Agent Framework's own behaviour through the storages ----------------------------------------------
CHILD = """
import asyncio, json, sys
from tests.agent_framework.test_checkpoint_storage import resume_and_report
print(json.dumps(asyncio.run(resume_and_report(json.loads(sys.argv[1])))))
"""


async def resume_and_report(args: dict[str, Any]) -> dict[str, Any]:
    """Run in the child process: resume the pause with the answer, as a host would after a restart."""
    storage = open_storage(args["settings"], scope=args["scope"])
    try:
        result = await build_workflow().run(checkpoint_id=args["checkpoint_id"], checkpoint_storage=storage,
                                            responses={args["request_id"]: args["answer"]})
        latest = await storage.get_latest(workflow_name=WORKFLOW)
    finally:
        await storage.close()
    return {"outputs": result.get_outputs(), "state": result.get_final_state().name, "handled": HANDLED,
            "pending": [e.request_id for e in result.get_request_info_events()],
            "latest": latest.checkpoint_id if latest else None}


async def resume_in_child(backend: Backend, scope: str, checkpoint_id: str, request_id: str,
                          answer: str) -> dict[str, Any]:
    args = {"settings": backend.settings, "scope": scope, "checkpoint_id": checkpoint_id,
            "request_id": request_id, "answer": answer}
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # Asynchronously: the cosmos-batch proxy is served by this test's event loop.
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, json.dumps(args), cwd=REPO_ROOT,
                                                 env=env, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report


async def pause(storage: Storage, expense: ExpenseRequest) -> tuple[WorkflowCheckpoint, str]:
    """Start a run and return the checkpoint it paused at and the pending request's id."""
    result = await build_workflow().run(expense, checkpoint_storage=storage)
    assert result.get_final_state() == WorkflowRunState.IDLE_WITH_PENDING_REQUESTS
    [request] = result.get_request_info_events()
    latest = await storage.get_latest(workflow_name=WORKFLOW)
    assert latest is not None and request.request_id in latest.pending_request_info_events
    return latest, request.request_id


def lineage(checkpoints: list[WorkflowCheckpoint], tip: str) -> list[str]:
    by_id = {c.checkpoint_id: c for c in checkpoints}
    chain: list[str] = []
    current: str | None = tip
    while current is not None:
        chain.append(current)
        current = by_id[current].previous_checkpoint_id
    return chain[::-1]


async def test_agent_framework_pauses_and_resumes_in_another_process(backend: Backend) -> None:
    HANDLED.clear()
    storage = backend.open(scope="session-1")
    paused, request_id = await pause(storage, ExpenseRequest("erin", 5000))
    assert paused.previous_checkpoint_id is not None  # the entry checkpoint (previous None) came first

    # The manager approves in a new process; the workflow pauses again, for finance.
    report = await resume_in_child(backend, "session-1", paused.checkpoint_id, request_id, "approve")
    assert report["handled"] == ["manager:approve"] and report["outputs"] == []
    assert report["state"] == "IDLE_WITH_PENDING_REQUESTS" and len(report["pending"]) == 1
    second = await storage.get_latest(workflow_name=WORKFLOW)
    assert second is not None and second.checkpoint_id == report["latest"]
    assert list(second.pending_request_info_events) == report["pending"]
    assert second.pending_request_info_events[report["pending"][0]].data == ExpenseRequest("erin", 5000, "finance")

    # Finance approves here: AF continues the lineage from the second pause.
    result = await build_workflow().run(checkpoint_id=second.checkpoint_id, checkpoint_storage=storage,
                                        responses={report["pending"][0]: "approve"})
    assert result.get_outputs() == ["erin 5000: approve by finance"]
    assert result.get_final_state() == WorkflowRunState.IDLE
    everything = await storage.list_checkpoints(workflow_name=WORKFLOW)
    final = await storage.get_latest(workflow_name=WORKFLOW)
    assert final is not None
    chain = lineage(everything, final.checkpoint_id)
    assert chain == [c.checkpoint_id for c in everything]  # one linear lineage, nothing stray
    # AF's bookkeeping, which the stale-writer rule relies on: a fresh run's first checkpoint has no
    # previous; a run restored from X writes its first checkpoint with previous X.
    assert everything[0].previous_checkpoint_id is None
    assert paused.checkpoint_id in chain and second.checkpoint_id in chain


async def resume_twice(backend: Backend, guarded: bool) -> tuple[list[Any], WorkflowCheckpoint]:
    """Resume one pause from two workflow instances (each with its own storage, as two processes) at once."""
    HANDLED.clear()
    paused, request_id = await pause(backend.open(scope="session-2"), ExpenseRequest("ed", 300))

    async def resume(answer: str) -> WorkflowRunResult:
        storage = backend.open(scope="session-2")
        run = build_workflow().run(checkpoint_id=paused.checkpoint_id, checkpoint_storage=storage,
                                   responses={request_id: answer})
        if not guarded:
            return await run
        with abort_on_stale_checkpoint():
            return await run

    results = await asyncio.gather(resume("approve"), resume("reject"), return_exceptions=True)
    return results, paused


async def test_two_concurrent_resumes_with_the_guard_one_completes_one_is_refused(backend: Backend) -> None:
    results, paused = await resume_twice(backend, guarded=True)
    completed = [r for r in results if isinstance(r, WorkflowRunResult)]
    refused = [r for r in results if isinstance(r, StaleCheckpointError)]
    assert len(completed) == 1 and len(refused) == 1, results
    [winner], [error] = completed, refused
    answer = "approve" if winner.get_outputs() == ["ed 300: approve by manager"] else "reject"
    assert winner.get_outputs() == [f"ed 300: {answer} by manager"]
    assert HANDLED == [f"manager:{answer}"]  # the refused run never reached its response handler
    assert error.previous_checkpoint_id == paused.checkpoint_id
    assert f"continues from {paused.checkpoint_id!r}" in str(error)

    storage = backend.open(scope="session-2")
    latest = await storage.get_latest(workflow_name=WORKFLOW)
    assert latest is not None and latest.checkpoint_id != paused.checkpoint_id
    everything = await storage.list_checkpoints(workflow_name=WORKFLOW)
    chain = lineage(everything, latest.checkpoint_id)
    assert chain == [c.checkpoint_id for c in everything]  # the refused run wrote nothing
    assert error.head_checkpoint_id in chain and error.checkpoint_id not in chain


async def test_two_concurrent_resumes_without_the_guard_as_agent_framework_behaves(
        backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    """AF 1.23 logs a failed checkpoint save and carries on, so both runs return and both handlers run;
    the storage still lets only one lineage in. Hence :func:`abort_on_stale_checkpoint`."""
    with caplog.at_level(logging.WARNING, logger="agent_framework"):
        results, paused = await resume_twice(backend, guarded=False)
    assert all(isinstance(r, WorkflowRunResult) for r in results), results
    assert sorted(HANDLED) == ["manager:approve", "manager:reject"]
    refusals = [r.getMessage() for r in caplog.records if "stale checkpoint writer" in r.getMessage()]
    assert refusals and all("Failed to create checkpoint" in m for m in refusals)

    storage = backend.open(scope="session-2")
    latest = await storage.get_latest(workflow_name=WORKFLOW)
    assert latest is not None
    everything = await storage.list_checkpoints(workflow_name=WORKFLOW)
    assert lineage(everything, latest.checkpoint_id) == [c.checkpoint_id for c in everything]
    assert paused.checkpoint_id in [c.checkpoint_id for c in everything]


# -- construction -------------------------------------------------------------------------------------
async def test_cosmos_from_hitl_settings(cosmos_server: Any) -> None:
    """The account hitl is configured for, Agent Framework checkpoints in their own container."""
    from hitl_core.settings import Settings, SettingsError

    settings = Settings(storage="cosmos", cosmos_endpoint=cosmos_server.endpoint, cosmos_key=cosmos_server.key,
                        cosmos_database="af-tests")
    async with CosmosAgentCheckpointStorage.from_settings(settings, scope="tenant-a",
                                                          container=f"s-{uuid.uuid4().hex[:12]}") as storage:
        assert storage.stand_in and storage.transactional_batch is False  # loopback: the stand-in
        await storage.save(checkpoint("c1", None, 1))
        assert (await storage.load("c1")).checkpoint_id == "c1"
    with pytest.raises(SettingsError):
        CosmosAgentCheckpointStorage.from_settings(Settings(), scope="tenant-a")


def test_constructor_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scope"):
        SqliteAgentCheckpointStorage(tmp_path / "a.db", scope="")
    with pytest.raises(TypeError, match="list of 'module:qualname'"):
        SqliteAgentCheckpointStorage(tmp_path / "a.db", scope="s", allowed_checkpoint_types="m:T")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hash tag"):
        RedisAgentCheckpointStorage("redis://127.0.0.1:1/0", scope="s", key_prefix="{af}:")
    with pytest.raises(ValueError, match="url= or client="):
        RedisAgentCheckpointStorage(scope="s")


async def test_sqlite_wal_checkpoints_run_off_the_event_loop(tmp_path: Path) -> None:
    """As for the session checkpoints: the WAL goes back into the file on a worker thread, every N
    commits, and the chain is intact when the file is opened again."""
    import threading

    storage = SqliteAgentCheckpointStorage(tmp_path / "af.db", scope="wal")
    storage.wal_checkpoints.every_commits = 4
    assert storage._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 20_000
    previous = None
    for n in range(1, 10):
        await storage.save(checkpoint(f"c{n}", previous, n))
        previous = f"c{n}"
        running = storage.wal_checkpoints._running
        if running is not None:
            await running
    await storage.close()
    assert storage.wal_checkpoints.runs == 2 and storage.wal_checkpoints.last_thread != threading.get_ident()
    reopened = SqliteAgentCheckpointStorage(tmp_path / "af.db", scope="wal")
    assert await reopened.list_checkpoint_ids(workflow_name="wf") == [f"c{n}" for n in range(1, 10)]
    await reopened.close()
