"""Running: events, state across checkpoints, failures, checkpoint policies and crash recovery."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from hitl_core import (
    CheckpointStorage,
    Executor,
    InMemoryCheckpointStorage,
    RequestInfoEvent,
    RequestInfoExecutor,
    RequestInfoMessage,
    RequestResponse,
    SqliteCheckpointStorage,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowEvent,
    WorkflowFailedEvent,
    WorkflowOutputEvent,
    WorkflowRunError,
    WorkflowRunState,
    WorkflowStatusEvent,
    handler,
)
from hitl_core.workflow.runner import RunOptions

from .counting import CountingStorage
from .flows import CONTINUATIONS, Ticket, build_approval


@dataclass
class Progress(WorkflowEvent):
    step: int = 0


class Accumulator(Executor):
    """Appends 1 KB per step to its state for ``steps`` supersteps, then asks a person."""

    def __init__(self, steps: int) -> None:
        super().__init__(id="acc")
        self.steps = steps

    @handler
    async def step(self, n: int, ctx: WorkflowContext[int | Confirm]) -> None:
        state = await ctx.get_state() or {"chunks": []}
        state["chunks"].append("x" * 1024)
        await ctx.set_state(state)
        await ctx.add_event(Progress(step=n))
        if n + 1 < self.steps:
            await ctx.send_message(n + 1, target_id="acc")
        else:
            await ctx.send_message(Confirm(), target_id="request_info")

    @handler
    async def done(self, response: RequestResponse[Confirm, bool], ctx: WorkflowContext[Any, int]) -> None:
        state = await ctx.get_state()
        await ctx.yield_output(len(state["chunks"]))


@dataclass
class Confirm(RequestInfoMessage):
    pass


def build_accumulator(storage: CheckpointStorage, steps: int, policy: str = "on_pause") -> Any:
    acc, info = Accumulator(steps), RequestInfoExecutor(id="request_info")
    return (
        WorkflowBuilder(name="acc")
        .set_start_executor(acc)
        .add_edge(acc, acc)
        .add_edge(acc, info)
        .add_edge(info, acc)
        .with_checkpointing(checkpoint_storage=storage, policy=policy)  # type: ignore[arg-type]
        .build()
    )


async def test_events_stream_in_order(sqlite_storage: CheckpointStorage) -> None:
    wf = build_accumulator(sqlite_storage, steps=3)
    events = [e async for e in wf.run_stream(0, checkpoint_id="s")]
    assert isinstance(events[0], WorkflowStatusEvent) and events[0].state is WorkflowRunState.IN_PROGRESS
    assert [e.step for e in events if isinstance(e, Progress)] == [0, 1, 2]
    assert isinstance(events[-2], RequestInfoEvent)
    assert isinstance(events[-1], WorkflowStatusEvent)
    assert events[-1].state is WorkflowRunState.IDLE_WITH_PENDING_REQUESTS


async def test_default_policy_writes_once_per_run_until_pause(tmp_path: Any) -> None:
    storage = CountingStorage(SqliteCheckpointStorage(tmp_path / "db"))
    wf = build_accumulator(storage, steps=50)  # type: ignore[arg-type]
    result = await wf.run(0, checkpoint_id="s")
    assert storage.ops["save"] == 1
    stored = await storage.inner.load("s")
    assert stored is not None
    final_size = len(stored.checkpoint.model_dump_json())
    assert storage.bytes_written == final_size
    assert final_size > 50 * 1024
    call_id = result.get_request_info_events()[0].request_id
    done = await wf.run_from_checkpoint("s", responses={call_id: True})
    assert done.get_outputs() == [50]
    # resume = claim + commit; nothing per superstep
    assert storage.ops["save"] == 3


async def test_per_superstep_policy_writes_every_superstep(tmp_path: Any) -> None:
    storage = CountingStorage(SqliteCheckpointStorage(tmp_path / "db"))
    wf = build_accumulator(storage, steps=5, policy="per_superstep")  # type: ignore[arg-type]
    await wf.run(0, checkpoint_id="s")
    # 5 accumulator supersteps + 1 request_info superstep; the last one is the pause itself
    assert storage.ops["save"] == 6
    assert storage.saved_statuses[:-1] == ["running"] * 5 and storage.saved_statuses[-1] == "pending"


async def test_per_superstep_checkpoint_can_be_continued_after_a_crash(tmp_path: Any) -> None:
    """A process dies mid-run (after superstep 3 was saved); another process finishes the run."""
    path = tmp_path / "db"

    class Crash(Exception):
        pass

    class CrashingStorage(CountingStorage):
        async def save(self, checkpoint: Any, **kwargs: Any) -> str:
            version = await super().save(checkpoint, **kwargs)
            if self.ops["save"] == 3:
                raise Crash  # the process "dies" right after the third write
            return version

    crashing = CrashingStorage(SqliteCheckpointStorage(path))
    wf = build_accumulator(crashing, steps=5, policy="per_superstep")  # type: ignore[arg-type]
    wf.lease_seconds = 0.0  # the dead process's lease is over at once
    with pytest.raises(Crash):
        await wf.run(0, checkpoint_id="s")
    survivor_storage = SqliteCheckpointStorage(path)
    stored = await survivor_storage.load("s")
    assert stored is not None and stored.checkpoint.status == "running" and stored.checkpoint.queue
    survivor = build_accumulator(survivor_storage, steps=5, policy="per_superstep")
    survivor.lease_seconds = 0.0
    result = await survivor.run_from_checkpoint("s")
    assert result.get_final_state() is WorkflowRunState.IDLE_WITH_PENDING_REQUESTS
    state = (await survivor_storage.load("s")).checkpoint.executor_states["acc"]  # type: ignore[union-attr]
    assert len(state["chunks"]) == 5


async def test_handler_failure_fails_the_session_with_the_error(sqlite_storage: CheckpointStorage) -> None:
    class Boom(Executor):
        @handler
        async def run(self, text: str, ctx: WorkflowContext) -> None:
            raise RuntimeError(f"cannot process {text}")

    boom = Boom(id="boom")
    wf = WorkflowBuilder().set_start_executor(boom).with_checkpointing(sqlite_storage).build()
    events: list[WorkflowEvent] = []
    with pytest.raises(WorkflowRunError, match="cannot process x") as info:
        async for event in wf.run_stream("x", checkpoint_id="s"):
            events.append(event)
    assert isinstance(info.value.__cause__, RuntimeError)
    failed = [e for e in events if isinstance(e, WorkflowFailedEvent)]
    assert len(failed) == 1 and "cannot process x" in failed[0].message
    assert isinstance(events[-1], WorkflowStatusEvent) and events[-1].state is WorkflowRunState.FAILED
    stored = await sqlite_storage.load("s")
    assert stored is not None and stored.checkpoint.status == "failed"
    assert "cannot process x" in (stored.checkpoint.error or "")


async def test_a_cycle_without_a_pause_is_stopped() -> None:
    class Loop(Executor):
        @handler
        async def run(self, n: int, ctx: WorkflowContext[int]) -> None:
            await ctx.send_message(n + 1)

    loop = Loop(id="loop")
    wf = WorkflowBuilder(max_supersteps=25).set_start_executor(loop).add_edge(loop, loop).build()
    with pytest.raises(WorkflowRunError, match="exceeded 25 supersteps"):
        await wf.run(0)


async def test_outputs_and_state_are_stored_and_restored(local_storage: CheckpointStorage) -> None:
    wf = build_approval(local_storage)
    call_id = (await wf.run(Ticket("monitor", 250.0), checkpoint_id="s")).get_request_info_events()[0].request_id
    stored = await local_storage.load("s")
    assert stored is not None
    assert stored.checkpoint.shared_state == {"ticket_title": "monitor"}
    assert stored.checkpoint.executor_states["requester"] == {"seen": ["monitor"]}
    await build_approval(local_storage).run_from_checkpoint("s", responses={call_id: {"approved": True}})
    final = await local_storage.load("s")
    assert final is not None and len(final.checkpoint.outputs) == 1
    assert final.checkpoint.outputs[0]["seen"] == ["monitor"]


async def test_finished_sessions_get_the_ttl_the_caller_asks_for() -> None:
    now = [1000.0]
    storage = InMemoryCheckpointStorage(clock=lambda: now[0])
    wf = build_approval(storage)
    opts = RunOptions(finished_ttl_seconds=60)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="s", options=opts)).get_request_info_events()[0].request_id
    now[0] += 3600  # a pending session never expires
    assert await storage.load("s") is not None
    await wf.run_from_checkpoint("s", responses={call_id: {"approved": True}}, options=opts)
    now[0] += 59
    assert await storage.load("s") is not None
    now[0] += 2
    assert await storage.load("s") is None


async def test_a_claim_whose_process_died_is_finished_by_the_next_caller(tmp_path: Any) -> None:
    """Claim written, continuation never committed (SIGKILL): recover() runs it exactly once."""
    path = tmp_path / "db"
    storage = SqliteCheckpointStorage(path)
    wf = build_approval(storage, lease_seconds=0.2)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="dead")).get_request_info_events()[0].request_id
    runner = wf.runner()
    await runner._claim("dead", {call_id: {"approved": True, "comment": "before crash"}}, RunOptions())
    stored = await storage.load("dead")
    assert stored is not None and stored.checkpoint.status == "running"
    CONTINUATIONS.clear()
    other = build_approval(SqliteCheckpointStorage(path), lease_seconds=0.2)
    with pytest.raises(Exception, match="already handled"):
        await other.run_from_checkpoint("dead", responses={call_id: {"approved": False}})
    await asyncio.sleep(0.25)
    result = await other.run_from_checkpoint("dead")
    assert result.get_outputs()[0]["comment"] == "before crash"
    assert CONTINUATIONS == [("dead", call_id)]
    assert (await storage.load("dead")).checkpoint.status == "completed"  # type: ignore[union-attr]


async def test_output_events_carry_the_source(sqlite_storage: CheckpointStorage) -> None:
    wf = build_approval(sqlite_storage)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="s")).get_request_info_events()[0].request_id
    result = await wf.run_from_checkpoint("s", responses={call_id: {"approved": True}})
    outputs = [e for e in result if isinstance(e, WorkflowOutputEvent)]
    assert [o.source_executor_id for o in outputs] == ["requester"]


@pytest.mark.parametrize(("mode", "saves"), [("claim", 2), ("optimistic", 1)])
async def test_storage_operations_per_start_and_resume(tmp_path: Any, mode: str, saves: int) -> None:
    storage = CountingStorage(SqliteCheckpointStorage(tmp_path / "db"))
    wf = build_approval(storage, resume_mode=mode)  # type: ignore[arg-type]
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="s")).get_request_info_events()[0].request_id
    assert dict(storage.ops) == {"load": 1, "save": 1}  # existence check + one create
    storage.ops.clear()
    await wf.run_from_checkpoint("s", responses={call_id: {"approved": True}})
    assert dict(storage.ops) == {"load": 1, "save": saves}
