"""Pattern 1 — synchronous escalation through ``workflow.as_agent()``.

The caller stays connected: the agent surfaces the human request as a function call, the
"human" (here a scripted reviewer, or stdin with ``--interactive``) answers, and the same agent
object continues. No checkpoint storage is configured.

Run: ``python -m examples.pattern1_synchronous [--interactive]``
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from hitl_core import ChatMessage, FunctionResultContent, Role, WorkflowAgent, extract_request_info_calls

from .review_workflow import HumanReviewRequest, ReviewResponse, build_review_workflow

Reviewer = Callable[[HumanReviewRequest], ReviewResponse]


def scripted_reviewer(request: HumanReviewRequest) -> ReviewResponse:
    """Reject the first draft, approve the second."""
    assert request.agent_request is not None
    if request.agent_request.iteration == 1:
        return ReviewResponse(approved=False, feedback="add a call to action")
    return ReviewResponse(approved=True)


def console_reviewer(request: HumanReviewRequest) -> ReviewResponse:
    assert request.agent_request is not None
    print(f"\n--- draft (round {request.agent_request.iteration}) ---\n{request.agent_request.draft}")
    answer = input("approve? [y/N] ").strip().lower()
    feedback = "" if answer == "y" else input("feedback: ")
    return ReviewResponse(approved=answer == "y", feedback=feedback)


async def run(prompt: str, reviewer: Reviewer) -> str:
    agent = build_review_workflow().as_agent()
    response = await agent.run(prompt)
    while calls := extract_request_info_calls(response):
        call = calls[0]
        args = WorkflowAgent.RequestInfoFunctionArgs.from_dict(call.arguments)
        decision = reviewer(args.data)  # args.data is the typed HumanReviewRequest
        response = await agent.run(
            ChatMessage(role=Role.TOOL, contents=[FunctionResultContent(call_id=call.call_id, result=decision)])
        )
    return response.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interactive", action="store_true")
    parser.add_argument("--prompt", default="Launch announcement for hitl")
    ns = parser.parse_args()
    print(asyncio.run(run(ns.prompt, console_reviewer if ns.interactive else scripted_reviewer)))


if __name__ == "__main__":
    main()
