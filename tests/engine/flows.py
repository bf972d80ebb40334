"""Small workflows the engine tests share (module level, so subprocesses can import them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from hitl_core import (
    CheckpointStorage,
    Executor,
    RequestInfoExecutor,
    RequestInfoMessage,
    RequestResponse,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
)


@dataclass
class Ticket:
    title: str
    amount: float


@dataclass
class ApprovalRequest(RequestInfoMessage):
    ticket: Ticket | None = None
    notes: list[str] = field(default_factory=list)


class Verdict(BaseModel):
    approved: bool
    comment: str = ""


#: Side effects of continuations, per (session, request) — tests count them.
CONTINUATIONS: list[tuple[str, str]] = []


class Requester(Executor):
    """Asks for approval of a ticket and records the verdict in its state and outputs."""

    def __init__(self, request_info_id: str = "request_info") -> None:
        super().__init__(id="requester")
        self.request_info_id = request_info_id

    @handler
    async def on_ticket(self, ticket: Ticket, ctx: WorkflowContext[ApprovalRequest]) -> None:
        await ctx.set_state({"seen": [ticket.title]})
        await ctx.set_shared_state("ticket_title", ticket.title)
        await ctx.send_message(ApprovalRequest(ticket=ticket, approvers=["alice"]), target_id=self.request_info_id)

    @handler
    async def on_verdict(
        self, response: RequestResponse[ApprovalRequest, Verdict], ctx: WorkflowContext[Any, dict[str, Any]]
    ) -> None:
        CONTINUATIONS.append((ctx.session_id, response.request_id))
        state = await ctx.get_state()
        title = await ctx.get_shared_state("ticket_title")
        assert isinstance(response.original_request, ApprovalRequest)
        assert response.original_request.ticket is not None
        await ctx.yield_output(
            {
                "title": title,
                "approved": response.data.approved,
                "comment": response.data.comment,
                "amount": response.original_request.ticket.amount,
                "seen": state["seen"],
            }
        )


def build_approval(storage: CheckpointStorage | None = None, **checkpointing: Any) -> Workflow:
    request_info = RequestInfoExecutor(id="request_info")
    requester = Requester(request_info.id)
    builder = (
        WorkflowBuilder(name="approval")
        .set_start_executor(requester)
        .add_edge(requester, request_info)
        .add_edge(request_info, requester)
    )
    if storage is not None:
        builder = builder.with_checkpointing(checkpoint_storage=storage, **checkpointing)
    return builder.build()
