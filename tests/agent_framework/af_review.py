"""A plain Agent Framework workflow, written as its own docs teach: draft -> human review -> publish.

The workflow knows nothing about hitl: ``Drafter`` asks a person with ``ctx.request_info`` and
receives the answer in its ``@response_handler``. ``SPEC`` at the end is the declaration beside it
that hosts it on the service unchanged (the tests and ``bench.af_hosting`` use it).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent_framework import Executor, Workflow, WorkflowBuilder, WorkflowContext, handler, response_handler
from pydantic import BaseModel, Field

from hitl_core.agent_framework import HumanStep, agent_framework_workflow

#: How many times each session's response handler ran (the side effect that must happen once).
PUBLISHED: dict[str, int] = {}


class Topic(BaseModel):
    topic: str = Field(min_length=1, max_length=200)


@dataclass
class DraftForReview:
    """What the reviewer sees."""

    draft: str
    words: int


class ReviewAnswer(BaseModel):
    approved: bool = Field(title="Publish it")
    feedback: str = Field(default="", max_length=2_000, title="Feedback")


class Drafter(Executor):
    def __init__(self) -> None:
        super().__init__(id="drafter")

    @handler
    async def write(self, topic: Topic, ctx: WorkflowContext) -> None:
        draft = f"A short note on {topic.topic}."
        await ctx.request_info(DraftForReview(draft=draft, words=len(draft.split())), ReviewAnswer)

    @response_handler
    async def reviewed(self, request: DraftForReview, answer: ReviewAnswer, ctx: WorkflowContext[str, str]) -> None:
        PUBLISHED[request.draft] = PUBLISHED.get(request.draft, 0) + 1
        if answer.approved:
            await ctx.yield_output(f"published: {request.draft}")
        else:
            await ctx.yield_output(f"withdrawn: {answer.feedback or 'no reason given'}")


def build() -> Workflow:
    """A new instance per run, as Agent Framework requires for independent runs."""
    return WorkflowBuilder(start_executor=Drafter(), name="af-review").build()


#: The application's types Agent Framework's restricted loader may build from a checkpoint.
ALLOWED = [f"{__name__}:DraftForReview", f"{__name__}:ReviewAnswer", f"{__name__}:Topic"]

SPEC = agent_framework_workflow(
    "af-review", build=build, input_model=Topic,
    steps=[HumanStep(request_type=DraftForReview, approvers=["rita"],
                     question=lambda d: f"Publish this draft of {d['words']} words?")],
    allowed_checkpoint_types=ALLOWED, description="draft -> review -> publish, written with Agent Framework")
