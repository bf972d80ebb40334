"""content-review — the seed's scenario as a service workflow.

Input ``{"draft": str}`` (optionally ``"reviewers": [...]``: the people — directory ids or e-mails —
who may decide; without it, any member of the ``reviewers`` role may). Each round asks a
person ``{"draft", "iteration"}`` and expects ``{"approved": bool, "feedback": str = ""}``.
Approved -> output ``{"published": <draft>}``. Rejected -> the draft is revised with the
feedback and a new request (new call_id, iteration + 1) is raised; after 3 rejections ->
output ``{"status": "abandoned"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field

from hitl_core import (
    Approvers,
    CheckpointStorage,
    Executor,
    RequestInfoMessage,
    RequestResponse,
    Workflow,
    WorkflowContext,
    handler,
)
from hitl_core.registry import WorkflowSpec, human_loop
from hitl_core.settings import Settings

NAME = "content-review"
MAX_REJECTIONS = 3
REVIEWERS_ROLE = "reviewers"


class ContentReviewInput(BaseModel):
    draft: str = Field(min_length=1, max_length=100_000)
    reviewers: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=50,
        description="Who may decide: people (directory id or e-mail), or role:<name>; default the reviewers role.")


class ReviewDecision(BaseModel):
    approved: bool
    feedback: str = Field(default="", max_length=10_000)


@dataclass
class DraftReviewRequest(RequestInfoMessage):
    draft: str = ""
    iteration: int = 1


def reviewers(named: list[str]) -> Approvers | list[str]:
    """The named reviewers (each a person, or ``role:<name>``), or else anyone with the ``reviewers`` role."""
    return list(named) if named else Approvers(roles=[REVIEWERS_ROLE])


def revise(draft: str, feedback: str) -> str:
    """Stand-in for the model call that rewrites the draft from the reviewer's feedback."""
    note = feedback.strip() or "no feedback given"
    return f"{draft}\n[revised: {note}]"


class Editor(Executor):
    def __init__(self) -> None:
        super().__init__(id="editor")

    @handler
    async def start(self, job: ContentReviewInput, ctx: WorkflowContext[DraftReviewRequest]) -> None:
        await ctx.set_state({"draft": job.draft, "iteration": 1, "reviewers": job.reviewers})
        await ctx.send_message(DraftReviewRequest(draft=job.draft, iteration=1, approvers=reviewers(job.reviewers)),
                               target_id="request_info")

    @handler
    async def reviewed(
        self,
        answer: RequestResponse[DraftReviewRequest, ReviewDecision],
        ctx: WorkflowContext[DraftReviewRequest, dict[str, Any]],
    ) -> None:
        state = await ctx.get_state()
        if answer.data.approved:
            await ctx.yield_output({"published": answer.original_request.draft})
            return
        if state["iteration"] >= MAX_REJECTIONS:
            await ctx.yield_output({"status": "abandoned"})
            return
        state["iteration"] += 1
        state["draft"] = revise(state["draft"], answer.data.feedback)
        await ctx.set_state(state)
        await ctx.send_message(
            DraftReviewRequest(draft=state["draft"], iteration=state["iteration"],
                               approvers=reviewers(state["reviewers"])),
            target_id="request_info",
        )


def build(storage: CheckpointStorage, settings: Settings) -> Workflow:
    # The handlers only touch workflow state (revise() is a pure function here), so a decision needs no
    # claim write: one read and one conditional write, and of concurrent decisions exactly one commits
    # (the others are told it was decided). A handler with outside effects would keep the default claim.
    return human_loop(NAME, Editor(), storage, resume_mode="optimistic")


SPEC = WorkflowSpec(name=NAME, input_model=ContentReviewInput, build=build,
                    description="Review a draft until it is approved or rejected three times.")
