"""The refund agent in plain Agent Framework 1.23: it pauses for approval, resumes from a checkpoint.

No language model is reachable from this machine: in every test ScriptedChatClient stands in for
the model (it answers the claim with a ``refund`` call and the tool's result with a summary). All
the rest - the tool-approval flow, the workflow, the checkpoints - is Agent Framework's own code.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from agent_framework import (
    ChatResponse,
    ChatResponseUpdate,
    CheckpointStorage,
    Content,
    FileCheckpointStorage,
    InMemoryCheckpointStorage,
    Message,
    ResponseStream,
    WorkflowEvent,
    WorkflowRunResult,
    WorkflowRunState,
)

from workflows.refund_agent_af import (
    APPROVAL_THRESHOLD,
    REJECTION_REASON_KEY,
    WORKFLOW_NAME,
    RefundClaim,
    RefundLedger,
    ScriptedChatClient,
    approve,
    build_refund_workflow,
    reject,
    requires_human_approval,
)

CLAIM = "Refund order A-1001, 250.00 EUR: parcel arrived broken"
REPO = Path(__file__).resolve().parents[2]


class RecordingClient(ScriptedChatClient):
    """ScriptedChatClient (the stand-in for the model) that also records what it was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[Message]] = []

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Awaitable[ChatResponse] | ResponseStream[ChatResponseUpdate, ChatResponse]:
        self.calls.append(list(messages))
        return super()._inner_get_response(messages=messages, stream=stream, options=options, **kwargs)


async def pause(storage: CheckpointStorage, ledger: RefundLedger, message: str | RefundClaim = CLAIM) -> WorkflowEvent:
    """Run a new workflow until it asks for approval; return that one request_info event."""
    result = await build_refund_workflow(ledger=ledger).run(message, checkpoint_storage=storage)
    assert result.get_final_state() == WorkflowRunState.IDLE_WITH_PENDING_REQUESTS
    assert result.get_outputs() == []
    [event] = result.get_request_info_events()
    return event


async def resume(
    storage: CheckpointStorage, ledger: RefundLedger, event: WorkflowEvent, answer: Content, **build: Any
) -> WorkflowRunResult:
    """Answer ``event`` on a NEW workflow instance, restored from the latest checkpoint."""
    checkpoint = await storage.get_latest(workflow_name=WORKFLOW_NAME)
    assert checkpoint is not None
    assert event.request_id in checkpoint.pending_request_info_events
    workflow = build_refund_workflow(ledger=ledger, **build)
    return await workflow.run(
        checkpoint_id=checkpoint.checkpoint_id, checkpoint_storage=storage, responses={event.request_id: answer}
    )


def file_storage(tmp_path: Path) -> FileCheckpointStorage:
    # No allowed_checkpoint_types: Content and the rest are Agent Framework types, and RefundClaim
    # registers itself with register_checkpoint_type when workflows.refund_agent_af is imported.
    return FileCheckpointStorage(tmp_path / "checkpoints")


async def test_run_pauses_with_one_approval_request_for_refund() -> None:
    """(a) ScriptedChatClient stands in for the model: it calls refund, the workflow asks first."""
    ledger = RefundLedger()
    event = await pause(InMemoryCheckpointStorage(), ledger)

    assert event.type == "request_info"
    assert event.response_type is Content
    request = event.data
    assert isinstance(request, Content)
    assert request.type == "function_approval_request"
    assert request.id == event.request_id
    assert request.function_call is not None
    assert request.function_call.name == "refund"
    assert request.function_call.parse_arguments() == {
        "order": "A-1001",
        "amount": 250.0,
        "currency": "EUR",
        "reason": "parcel arrived broken",
    }
    assert ledger.count == 0


async def test_approval_on_a_new_instance_runs_the_tool_once(tmp_path: Path) -> None:
    """(b) ScriptedChatClient stands in for the model; the approved refund is paid exactly once."""
    ledger = RefundLedger()
    event = await pause(file_storage(tmp_path), ledger)
    assert ledger.count == 0

    # A new storage object on the same directory and a new workflow: as in another process.
    result = await resume(file_storage(tmp_path), ledger, event, approve(event.data))

    assert result.get_final_state() == WorkflowRunState.IDLE
    assert result.get_request_info_events() == []
    assert result.get_outputs() == ["Refunded 250.00 EUR for order A-1001 (refund R-0001)."]
    assert ledger.count == 1
    [record] = ledger.records
    assert (record.order, record.amount, record.currency, record.reason) == (
        "A-1001",
        250.0,
        "EUR",
        "parcel arrived broken",
    )


async def test_rejection_never_runs_the_tool(tmp_path: Path) -> None:
    """(c) ScriptedChatClient stands in for the model; it reads the reviewer's reason from the result."""
    ledger = RefundLedger()
    event = await pause(file_storage(tmp_path), ledger)

    result = await resume(file_storage(tmp_path), ledger, event, reject(event.data, "no photo of the damage"))

    assert result.get_final_state() == WorkflowRunState.IDLE
    assert result.get_outputs() == [
        "The refund of 250.00 EUR for order A-1001 was not approved: no photo of the damage."
    ]
    assert ledger.count == 0


async def test_plain_rejection_without_a_reason(tmp_path: Path) -> None:
    """ScriptedChatClient stands in for the model; AF's own to_function_approval_response(False) works as is."""
    ledger = RefundLedger()
    event = await pause(file_storage(tmp_path), ledger)

    result = await resume(file_storage(tmp_path), ledger, event, event.data.to_function_approval_response(False))

    assert result.get_outputs() == [
        "The refund of 250.00 EUR for order A-1001 was not approved: the reviewer gave no reason."
    ]
    assert ledger.count == 0


async def test_conversation_survives_in_the_checkpoint(tmp_path: Path) -> None:
    """(d) ScriptedChatClient stands in for the model. The resumed instance gets only the checkpoint
    id, the storage and the answer - yet the model is shown the whole conversation."""
    ledger = RefundLedger()
    event = await pause(file_storage(tmp_path), ledger, RefundClaim("B-7", 80.0, "USD", "wrong size"))

    model = RecordingClient()
    result = await resume(file_storage(tmp_path), ledger, event, approve(event.data), client=model)

    assert result.get_outputs() == ["Refunded 80.00 USD for order B-7 (refund R-0001)."]
    [shown] = model.calls  # one model call after the approval: the summary
    roles = [message.role for message in shown if message.role != "system"]
    assert roles == ["user", "assistant", "tool"]
    assert shown[-3].text == "Refund order B-7, 80.00 USD: wrong size"
    [call] = shown[-2].contents
    assert call.type == "function_call" and call.name == "refund"
    [tool_result] = shown[-1].contents
    assert tool_result.type == "function_result" and tool_result.call_id == call.call_id
    assert tool_result.result == "Refund R-0001 issued: 80.00 USD for order B-7."
    assert ledger.count == 1


async def test_resume_in_another_process(tmp_path: Path) -> None:
    """ScriptedChatClient stands in for the model in both processes; the second one is a new Python."""
    event = await pause(file_storage(tmp_path), RefundLedger())
    script = (
        "import asyncio, json, sys\n"
        "from agent_framework import Content, FileCheckpointStorage\n"
        "from workflows.refund_agent_af import LEDGER, WORKFLOW_NAME, build_refund_workflow\n"
        "async def main():\n"
        "    storage = FileCheckpointStorage(sys.argv[1])\n"
        "    checkpoint = await storage.get_latest(workflow_name=WORKFLOW_NAME)\n"
        "    answer = Content.from_dict(json.loads(sys.argv[3]))\n"
        "    result = await build_refund_workflow().run(checkpoint_id=checkpoint.checkpoint_id,\n"
        "        checkpoint_storage=storage, responses={sys.argv[2]: answer})\n"
        "    print(json.dumps({'outputs': result.get_outputs(), 'refunds': LEDGER.count}))\n"
        "asyncio.run(main())\n"
    )
    # The answer crosses the process boundary as JSON, as it would through the service.
    answer = json.dumps(approve(event.data).to_dict())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(tmp_path / "checkpoints"),
        event.request_id,
        answer,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    assert report == {"outputs": ["Refunded 250.00 EUR for order A-1001 (refund R-0001)."], "refunds": 1}


async def test_streaming_run_pauses_and_resumes() -> None:
    """ScriptedChatClient stands in for the model, here through its streaming path."""
    ledger = RefundLedger()
    storage = InMemoryCheckpointStorage()
    stream = build_refund_workflow(ledger=ledger).run(CLAIM, stream=True, checkpoint_storage=storage)
    events = [event async for event in stream]
    [event] = [e for e in events if e.type == "request_info"]
    assert event.data.function_call.name == "refund"

    result = await resume(storage, ledger, event, approve(event.data))

    assert result.get_outputs() == ["Refunded 250.00 EUR for order A-1001 (refund R-0001)."]
    assert ledger.count == 1


async def test_unreadable_claim_gets_an_answer_and_no_request() -> None:
    """ScriptedChatClient stands in for the model: without an order and amount it calls no tool."""
    ledger = RefundLedger()
    result = await build_refund_workflow(ledger=ledger).run("I want my money back")

    assert result.get_request_info_events() == []
    [answer] = result.get_outputs()
    assert answer.startswith("Which order should I refund")
    assert ledger.count == 0


@pytest.mark.parametrize(("amount", "needs_person"), [(250.0, True), (100.01, True), (100.0, False), (12.5, False)])
def test_policy_helper_says_who_decides(amount: float, needs_person: bool) -> None:
    """No model call here (ScriptedChatClient stands in for the model elsewhere): the host applies the threshold."""
    call = Content.from_function_call(
        call_id="call_1",
        name="refund",
        arguments={"order": "A-1", "amount": amount, "currency": "EUR", "reason": "x"},
        id="occurrence-1",
    )
    request = Content.from_function_approval_request(id="occurrence-1", function_call=call)
    assert APPROVAL_THRESHOLD == 100.0
    assert requires_human_approval(request) is needs_person


def test_reject_keeps_the_request_untouched() -> None:
    """No model call here (ScriptedChatClient stands in for the model elsewhere): reject() leaves the request alone."""
    call = Content.from_function_call(call_id="call_1", name="refund", arguments={"amount": 1.0}, id="occ-1")
    request = Content.from_function_approval_request(id="occ-1", function_call=call)
    response = reject(request, "  duplicate claim ")

    assert response.type == "function_approval_response"
    assert response.approved is False
    assert response.id == request.id
    assert response.additional_properties[REJECTION_REASON_KEY] == "duplicate claim"
    assert REJECTION_REASON_KEY not in request.additional_properties
    assert approve(request).approved is True
