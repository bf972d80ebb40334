"""The seed's scenario as a reusable workflow: a drafter asks a person to review each draft.

Used by the Pattern 1 and Pattern 2 examples and by the tests. Everything here is defined at
module level so a checkpoint written by one process can be restored by another.
"""

from __future__ import annotations

from dataclasses import dataclass

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
class ReviewRequest:
    draft: str
    iteration: int


@dataclass
class ReviewResponse:
    approved: bool
    feedback: str = ""


@dataclass
class HumanReviewRequest(RequestInfoMessage):
    agent_request: ReviewRequest | None = None


class Drafter(Executor):
    """Writes a draft, asks a person, revises on feedback, publishes on approval."""

    def __init__(self, request_info_id: str, max_rounds: int = 3) -> None:
        super().__init__(id="drafter")
        self._request_info_id = request_info_id
        self._max_rounds = max_rounds

    @handler
    async def start(self, prompt: str, ctx: WorkflowContext[HumanReviewRequest, str]) -> None:
        draft = f"Draft: {prompt}"
        await ctx.set_state({"iteration": 1, "draft": draft})
        await ctx.send_message(HumanReviewRequest(agent_request=ReviewRequest(draft, 1)),
                               target_id=self._request_info_id)

    @handler
    async def on_review(
        self,
        response: RequestResponse[HumanReviewRequest, ReviewResponse],
        ctx: WorkflowContext[HumanReviewRequest, str],
    ) -> None:
        state = await ctx.get_state()
        if response.data.approved:
            await ctx.yield_output(f"Published: {state['draft']}")
            return
        if state["iteration"] >= self._max_rounds:
            await ctx.yield_output("Abandoned after too many rejections")
            return
        state["iteration"] += 1
        state["draft"] = f"{state['draft']} (revised: {response.data.feedback})"
        await ctx.set_state(state)
        await ctx.send_message(
            HumanReviewRequest(agent_request=ReviewRequest(state["draft"], state["iteration"])),
            target_id=self._request_info_id,
        )


def build_review_workflow(storage: CheckpointStorage | None = None) -> Workflow:
    request_info = RequestInfoExecutor(id="request_info")
    drafter = Drafter(request_info.id)
    builder = (
        WorkflowBuilder(name="content-review")
        .set_start_executor(drafter)
        .add_edge(drafter, request_info)
        .add_edge(request_info, drafter)
    )
    if storage is not None:
        builder = builder.with_checkpointing(checkpoint_storage=storage)
    return builder.build()
