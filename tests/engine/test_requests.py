"""Typed human requests: pause, typed answers, validation, and the troubleshooting table's errors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hitl_core import (
    CheckpointingNotConfiguredError,
    CheckpointStorage,
    Executor,
    MisroutedRequestError,
    RequestAlreadyHandledError,
    RequestInfoExecutor,
    RequestResponse,
    ResponseValidationError,
    SerializationError,
    SessionClosedError,
    SessionNotFoundError,
    UnknownRequestError,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowRunState,
    handler,
)

from .flows import ApprovalRequest, Ticket, Verdict, build_approval


async def test_run_pauses_with_a_typed_pending_request(local_storage: CheckpointStorage) -> None:
    wf = build_approval(local_storage)
    result = await wf.run(Ticket("laptop", 1200.0), checkpoint_id="s1")
    assert result.get_final_state() is WorkflowRunState.IDLE_WITH_PENDING_REQUESTS
    (event,) = result.get_request_info_events()
    assert isinstance(event.data, ApprovalRequest)
    assert event.data.ticket == Ticket("laptop", 1200.0)
    assert event.request_type is ApprovalRequest
    assert event.response_type is Verdict
    assert event.source_executor_id == "requester"
    stored = await local_storage.load("s1")
    assert stored is not None
    assert stored.checkpoint.status == "pending"
    assert stored.checkpoint.pending_call_ids() == [event.request_id]
    assert stored.checkpoint.pending_requests[0].approvers == ["user:alice"]


async def test_resume_in_a_new_workflow_object_delivers_the_typed_original_request(
    local_storage: CheckpointStorage,
) -> None:
    first = await build_approval(local_storage).run(Ticket("chair", 90.5), checkpoint_id="s1")
    call_id = first.get_request_info_events()[0].request_id
    fresh = build_approval(local_storage)  # nothing shared in memory with the first object
    result = await fresh.run_from_checkpoint("s1", responses={call_id: {"approved": True, "comment": "ok"}})
    assert result.get_final_state() is WorkflowRunState.IDLE
    assert result.get_outputs() == [
        {"title": "chair", "approved": True, "comment": "ok", "amount": 90.5, "seen": ["chair"]}
    ]
    stored = await local_storage.load("s1")
    assert stored is not None and stored.checkpoint.status == "completed"
    decision = stored.checkpoint.find_decision(call_id)
    assert decision is not None and decision.applied and decision.outcome == "answered"


@pytest.mark.parametrize(
    "answer",
    [Verdict(approved=False, comment="no"), {"approved": False, "comment": "no"}],
    ids=["pydantic", "dict"],
)
async def test_answers_are_validated_into_the_declared_response_type(
    sqlite_storage: CheckpointStorage, answer: object
) -> None:
    wf = build_approval(sqlite_storage)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="s")).get_request_info_events()[0].request_id
    result = await wf.run_from_checkpoint("s", responses={call_id: answer})
    assert result.get_outputs()[0]["approved"] is False
    assert result.get_outputs()[0]["comment"] == "no"


@dataclass
class VerdictLike:
    approved: bool
    comment: str


async def test_a_dataclass_of_another_type_is_validated_by_its_fields(sqlite_storage: CheckpointStorage) -> None:
    wf = build_approval(sqlite_storage)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="s")).get_request_info_events()[0].request_id
    result = await wf.run_from_checkpoint("s", responses={call_id: VerdictLike(True, "fine")})
    assert result.get_outputs()[0]["comment"] == "fine"


async def test_invalid_answer_is_rejected_and_the_request_stays_pending(local_storage: CheckpointStorage) -> None:
    wf = build_approval(local_storage)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="s")).get_request_info_events()[0].request_id
    before = await local_storage.load("s")
    with pytest.raises(ResponseValidationError) as info:
        await wf.run_from_checkpoint("s", responses={call_id: {"approved": "perhaps"}})
    assert "approved" in str(info.value) and call_id in str(info.value)
    assert isinstance(info.value, ValueError)
    after = await local_storage.load("s")
    assert after is not None and before is not None
    assert after.version == before.version
    assert after.checkpoint.pending_call_ids() == [call_id]


async def test_unknown_call_id_lists_the_pending_ones_and_changes_nothing(local_storage: CheckpointStorage) -> None:
    wf = build_approval(local_storage)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="s")).get_request_info_events()[0].request_id
    before = await local_storage.load("s")
    with pytest.raises(UnknownRequestError) as info:
        await wf.run_from_checkpoint("s", responses={"not-a-call": {"approved": True}})
    assert isinstance(info.value, ValueError)
    assert info.value.pending == [call_id]
    assert call_id in str(info.value)
    after = await local_storage.load("s")
    assert after is not None and before is not None and after.version == before.version


async def test_second_decision_names_the_recorded_one(local_storage: CheckpointStorage) -> None:
    wf = build_approval(local_storage)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="s")).get_request_info_events()[0].request_id
    await wf.run_from_checkpoint("s", responses={call_id: {"approved": True, "comment": "first"}})
    before = await local_storage.load("s")
    with pytest.raises(RequestAlreadyHandledError) as info:
        await wf.run_from_checkpoint("s", responses={call_id: {"approved": False}})
    assert info.value.decision["result"] == {"approved": True, "comment": "first"}
    assert "first" in str(info.value)
    after = await local_storage.load("s")
    assert after is not None and before is not None and after.version == before.version


async def test_resuming_an_unknown_session_is_a_clear_error(sqlite_storage: CheckpointStorage) -> None:
    wf = build_approval(sqlite_storage)
    with pytest.raises(SessionNotFoundError, match="nope"):
        await wf.run_from_checkpoint("nope", responses={"x": {}})


async def test_checkpoint_id_without_storage_names_with_checkpointing() -> None:
    wf = build_approval()
    with pytest.raises(CheckpointingNotConfiguredError, match=r"with_checkpointing\(checkpoint_storage="):
        await wf.run(Ticket("a", 1.0), checkpoint_id="workflow-123")
    with pytest.raises(CheckpointingNotConfiguredError, match="with_checkpointing"):
        await wf.run_from_checkpoint("workflow-123", responses={"x": {}})


async def test_without_storage_send_responses_continues_in_memory() -> None:
    wf = build_approval()
    first = await wf.run(Ticket("desk", 300.0))
    call_id = first.get_request_info_events()[0].request_id
    result = await wf.send_responses({call_id: Verdict(approved=True)})
    assert result.get_final_state() is WorkflowRunState.IDLE
    assert result.get_outputs()[0]["title"] == "desk"


async def test_pending_requests_from_checkpoint_allows_pre_supplied_answers(local_storage: CheckpointStorage) -> None:
    await build_approval(local_storage).run(Ticket("a", 2.0), checkpoint_id="s")
    stored = await local_storage.load("s")
    assert stored is not None
    pending = RequestInfoExecutor.pending_requests_from_checkpoint(stored)
    assert [type(p.data) for p in pending] == [ApprovalRequest]
    assert pending[0].response_type is Verdict
    answers = {p.request_id: p.response_type(approved=True) for p in pending if p.response_type}
    result = await build_approval(local_storage).run_from_checkpoint("s", responses=answers)
    assert result.get_outputs()[0]["approved"] is True


async def test_finished_session_accepts_no_more_input(sqlite_storage: CheckpointStorage) -> None:
    wf = build_approval(sqlite_storage)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="s")).get_request_info_events()[0].request_id
    await wf.cancel("s")
    with pytest.raises(RequestAlreadyHandledError) as info:
        await wf.run_from_checkpoint("s", responses={call_id: {"approved": True}})
    assert info.value.decision["outcome"] == "cancelled"
    with pytest.raises(SessionClosedError):
        await wf.run_from_checkpoint("s", responses={"other": {"approved": True}})
    with pytest.raises(SessionClosedError):
        await wf.cancel("s")


async def test_rerunning_without_answers_re_emits_the_pending_request(sqlite_storage: CheckpointStorage) -> None:
    wf = build_approval(sqlite_storage)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="s")).get_request_info_events()[0].request_id
    again = await wf.run_from_checkpoint("s")
    assert [e.request_id for e in again.get_request_info_events()] == [call_id]
    assert again.get_final_state() is WorkflowRunState.IDLE_WITH_PENDING_REQUESTS


# -- misrouting and serialisation ---------------------------------------------------------------


class Forgetful(Executor):
    """Sends its request along its edge to a plain executor instead of the RequestInfoExecutor."""

    @handler
    async def go(self, text: str, ctx: WorkflowContext[ApprovalRequest | str]) -> None:
        await ctx.send_message(ApprovalRequest(ticket=Ticket(text, 1.0)))


class Printer(Executor):
    @handler
    async def show(self, text: str, ctx: WorkflowContext) -> None:
        return None


async def test_request_not_routed_to_request_info_fails_with_the_fix() -> None:
    src, dst = Forgetful(id="forgetful"), Printer(id="printer")
    wf = WorkflowBuilder().set_start_executor(src).add_edge(src, dst).build()
    with pytest.raises(MisroutedRequestError) as info:
        await wf.run("x")
    message = str(info.value)
    assert "target_id=request_info_executor.id" in message
    assert "'printer'" in message


class Leaky(Executor):
    @handler
    async def go(self, text: str, ctx: WorkflowContext[ApprovalRequest]) -> None:
        request = ApprovalRequest(ticket=Ticket(text, 1.0))
        request.notes.append(object())  # type: ignore[arg-type]
        await ctx.send_message(request, target_id="request_info")

    @handler
    async def back(self, response: RequestResponse[ApprovalRequest, Verdict], ctx: WorkflowContext) -> None:
        return None




async def test_unserialisable_request_fails_when_it_is_sent(sqlite_storage: CheckpointStorage) -> None:
    leaky, info = Leaky(id="leaky"), RequestInfoExecutor(id="request_info")
    wf = (WorkflowBuilder().set_start_executor(leaky).add_edge(leaky, info).add_edge(info, leaky)
          .with_checkpointing(sqlite_storage).build())
    with pytest.raises(SerializationError, match=r"notes\[0\]"):
        await wf.run("x", checkpoint_id="s")
    stored = await sqlite_storage.load("s")
    assert stored is not None
    assert stored.checkpoint.status == "failed"
    assert "notes[0]" in (stored.checkpoint.error or "")
    assert stored.checkpoint.pending_requests == []

