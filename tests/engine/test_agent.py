"""WorkflowAgent: the function-call bridge, stable session keys, typed arguments."""

from __future__ import annotations

import json
from typing import Any

import pytest

from examples.review_workflow import HumanReviewRequest, ReviewRequest, ReviewResponse, build_review_workflow
from hitl_core import (
    ChatMessage,
    CheckpointingNotConfiguredError,
    CheckpointStorage,
    Executor,
    FunctionCallContent,
    FunctionResultContent,
    Role,
    SessionClosedError,
    SessionNotFoundError,
    WorkflowAgent,
    WorkflowBuilder,
    WorkflowContext,
    extract_request_info_calls,
    handler,
)


def tool_message(call_id: str, result: Any) -> ChatMessage:
    return ChatMessage(role=Role.TOOL, contents=[FunctionResultContent(call_id=call_id, result=result)])


async def test_a_pending_request_surfaces_as_a_function_call(local_storage: CheckpointStorage) -> None:
    agent = build_review_workflow(local_storage).as_agent()
    response = await agent.run("Spring sale", checkpoint_id="workflow-123")
    (call,) = extract_request_info_calls(response)
    assert isinstance(call, FunctionCallContent)
    assert call.name == WorkflowAgent.REQUEST_INFO_FUNCTION_NAME == "request_info"
    args = WorkflowAgent.RequestInfoFunctionArgs.from_dict(call.arguments)
    assert args.request_id == call.call_id
    assert isinstance(args.data, HumanReviewRequest)  # typed, not a mapping (troubleshooting row 1)
    assert args.data.agent_request == ReviewRequest(draft="Draft: Spring sale", iteration=1)
    again = WorkflowAgent.RequestInfoFunctionArgs.from_json(args.to_json())
    assert again == args
    assert json.loads(args.to_json())["data"]["agent_request"]["iteration"] == 1


async def test_tool_message_resumes_the_same_session_from_storage_alone(local_storage: CheckpointStorage) -> None:
    first = await build_review_workflow(local_storage).as_agent().run("Post", checkpoint_id="k")
    call = extract_request_info_calls(first)[0]
    agent2 = build_review_workflow(local_storage).as_agent()  # another object, as in another process
    second = await agent2.run(tool_message(call.call_id, ReviewResponse(False, "tighter")), checkpoint_id="k")
    (call2,) = extract_request_info_calls(second)
    assert call2.call_id != call.call_id
    data = WorkflowAgent.RequestInfoFunctionArgs.from_dict(call2.arguments).data
    assert data.agent_request.iteration == 2 and "tighter" in data.agent_request.draft
    agent3 = build_review_workflow(local_storage).as_agent()
    done = await agent3.run(tool_message(call2.call_id, {"approved": True}), checkpoint_id="k")
    assert done.text == "Published: Draft: Post (revised: tighter)"
    assert done.messages[-1].role is Role.ASSISTANT
    with pytest.raises(SessionClosedError):
        await agent3.run("another prompt", checkpoint_id="k")


async def test_a_plain_prompt_on_a_pending_session_re_prompts(local_storage: CheckpointStorage) -> None:
    agent = build_review_workflow(local_storage).as_agent()
    call = extract_request_info_calls(await agent.run("A", checkpoint_id="k"))[0]
    again = await agent.run("A", checkpoint_id="k")
    assert [c.call_id for c in extract_request_info_calls(again)] == [call.call_id]


async def test_agent_with_checkpoint_id_but_no_storage_is_a_clear_error() -> None:
    agent = build_review_workflow().as_agent()
    with pytest.raises(CheckpointingNotConfiguredError, match="with_checkpointing"):
        await agent.run("x", checkpoint_id="workflow-123")


async def test_tool_result_for_an_unknown_session_is_refused(sqlite_storage: CheckpointStorage) -> None:
    agent = build_review_workflow(sqlite_storage).as_agent()
    with pytest.raises(SessionNotFoundError):
        await agent.run(tool_message("c", {"approved": True}), checkpoint_id="never-started")
    assert await sqlite_storage.load("never-started") is None


class ChatStart(Executor):
    """Accepts chat messages only; answers with a dict output."""

    @handler
    async def run(self, messages: list[ChatMessage], ctx: WorkflowContext[Any, dict[str, Any]]) -> None:
        await ctx.yield_output({"count": len(messages), "last": messages[-1].text})


async def test_messages_go_to_a_chat_handler_and_outputs_come_back_as_json_text() -> None:
    start = ChatStart(id="chat")
    agent = WorkflowBuilder().set_start_executor(start).build().as_agent()
    response = await agent.run([ChatMessage(Role.USER, text="hi"), ChatMessage(Role.USER, text="there")])
    assert json.loads(response.text) == {"count": 2, "last": "there"}
    updates = [u async for u in agent.run_stream("solo")]
    assert [json.loads(u.text) for u in updates] == [{"count": 1, "last": "solo"}]


async def test_run_stream_yields_the_function_call(sqlite_storage: CheckpointStorage) -> None:
    agent = build_review_workflow(sqlite_storage).as_agent()
    updates = [u async for u in agent.run_stream("S", checkpoint_id="k")]
    calls = [c for u in updates for c in u.contents if isinstance(c, FunctionCallContent)]
    assert len(calls) == 1 and updates[0].role is Role.ASSISTANT
