"""The seed's end-to-end example: ``start_workflow`` / ``resume_workflow`` made real.

``save_pending_request`` and ``load_pending_request`` need no table of their own: the checkpoint
already records what each session waits for. ``notify_manager`` is a callback (the serverless
app publishes an Event Grid event instead).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hitl_core import (
    AgentRunResponse,
    ChatMessage,
    CheckpointStorage,
    FunctionCallContent,
    FunctionResultContent,
    RequestInfoExecutor,
    Role,
    WorkflowAgent,
    extract_request_info_calls,
)

from .review_workflow import ReviewResponse, build_review_workflow

Notifier = Callable[[str, FunctionCallContent], None]


class ReviewApp:
    """The two entry points of the seed, over one checkpoint storage."""

    def __init__(self, storage: CheckpointStorage, notify_manager: Notifier) -> None:
        self.storage = storage
        self.agent: WorkflowAgent = build_review_workflow(storage).as_agent()
        self.notify_manager = notify_manager

    async def start_workflow(self, session_id: str, prompt: str) -> dict[str, Any]:
        response = await self.agent.run(prompt, checkpoint_id=session_id)
        calls = extract_request_info_calls(response)
        if calls:
            self.notify_manager(session_id, calls[0])
            return {"status": "pending", "session_id": session_id}
        return {"status": "completed", "result": read_output(response)}

    async def load_pending_request(self, session_id: str) -> str:
        stored = await self.storage.load(session_id)
        if stored is None:
            raise LookupError(f"no session {session_id!r}")
        pending = RequestInfoExecutor.pending_requests_from_checkpoint(stored)
        if not pending:
            raise LookupError(f"session {session_id!r} waits for nothing")
        return pending[0].request_id

    async def resume_workflow(self, session_id: str, decision: ReviewResponse) -> dict[str, Any]:
        call_id = await self.load_pending_request(session_id)
        result = FunctionResultContent(call_id=call_id, result=decision)
        response = await self.agent.run(ChatMessage(role=Role.TOOL, contents=[result]), checkpoint_id=session_id)
        if extract_request_info_calls(response):
            self.notify_manager(session_id, extract_request_info_calls(response)[0])
            return {"status": "pending", "session_id": session_id}
        return {"status": "resumed", "result": read_output(response)}


def read_output(response: AgentRunResponse) -> str:
    return response.text


def print_notifier(session_id: str, call: FunctionCallContent) -> None:
    print(json.dumps({"notify": session_id, "call_id": call.call_id, "arguments": call.arguments}, default=str))
