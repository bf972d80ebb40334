"""contract-signoff — every named legal reviewer must approve a contract; any one of them may veto.

Input ``{"title": str, "counterparty": str, "value": number > 0, "currency": str, "summary": str,
"legal_reviewers": [str, ...]}``. Each reviewer must be a person of the directory's ``legal``
role; the initiator may not name themselves (they could not approve: separation of duties).
The request's approval policy is the whole rule, declared rather than coded:

* ``quorum="all"``: the contract is signed off when every named reviewer approved;
* ``veto=True``: one rejection ends it at once, with that reviewer's comment;
* an escalation chain over ``HITL_CONTRACT_DEADLINE_SECONDS``: a reminder at half of it and at four
  fifths, then the request expires (the session fails; the initiator starts again).

Legal reviewers are often away: a reviewer's out-of-office delegate votes in their place
("ron for lena", see ``PUT /api/delegations/{user}``) and receives their e-mails.
Each vote is ``{"approved": bool, "comment": str = ""}``. Output ``{"status": "signed-off" |
"rejected", "title": ..., "votes": [{"voter", "by"?, "approved", "comment"}, ...]}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hitl_core import (
    ApprovalPolicy,
    Approvers,
    CheckpointStorage,
    EscalationStep,
    Executor,
    RequestInfoMessage,
    RequestResponse,
    Workflow,
    WorkflowContext,
    handler,
)
from hitl_core.errors import InputValidationError
from hitl_core.registry import StartContext, WorkflowSpec, human_loop
from hitl_core.settings import Settings

NAME = "contract-signoff"
LEGAL_ROLE = "legal"


class ContractInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200, description="The contract's title.")
    counterparty: str = Field(min_length=1, max_length=200, description="Who the contract is with.")
    value: float = Field(gt=0, allow_inf_nan=False, description="The contract's total value.")
    currency: str = Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")
    summary: str = Field(min_length=1, max_length=5000, description="What the reviewers must know.")
    legal_reviewers: list[str] = Field(min_length=1, max_length=10,
                                       description="Every one of them must approve (directory ids or e-mails).")


class ContractDraft(ContractInput):
    """The input with its reviewers resolved to directory ids (the ones the policy counts)."""

    reviewer_ids: list[str]


async def resolve_reviewers(model: BaseModel, context: StartContext) -> BaseModel:
    """Reviewers are people of the ``legal`` role, each once, never the initiator."""
    draft = ContractInput.model_validate(model.model_dump())
    errors: list[dict[str, Any]] = []
    ids: list[str] = []
    for index, key in enumerate(draft.legal_reviewers):
        person = await context.directory.person(key)
        where: list[str | int] = ["legal_reviewers", index]
        if person is None:
            errors.append({"loc": where, "msg": f"{key} is not in the directory", "type": "unknown_person"})
        elif LEGAL_ROLE not in person.roles:
            errors.append({"loc": where, "msg": f"{person.label} is not in the {LEGAL_ROLE} role", "type": "not_legal"})
        elif context.initiator and person.id.lower() == context.initiator.lower():
            errors.append({"loc": where, "msg": f"{person.label} started the sign-off and may not review it",
                           "type": "separation_of_duties"})
        elif person.id.lower() in ids:
            errors.append({"loc": where, "msg": f"{person.label} is named twice", "type": "duplicate"})
        else:
            ids.append(person.id.lower())
    if errors:
        raise InputValidationError(NAME, errors)
    return ContractDraft(**draft.model_dump(), reviewer_ids=ids)


class ContractVote(BaseModel):
    approved: bool = Field(description="Approve the contract as it stands (false: veto it).")
    comment: str = Field(default="", max_length=5000, description="Why (shown to the initiator).")


@dataclass
class ContractReviewRequest(RequestInfoMessage):
    title: str = ""
    counterparty: str = ""
    value: float = 0.0
    currency: str = ""
    summary: str = ""
    reviewers: list[str] = field(default_factory=list)


class ContractDesk(Executor):
    def __init__(self, deadline_seconds: int) -> None:
        super().__init__(id="contracts")
        self.deadline_seconds = deadline_seconds

    def policy(self) -> ApprovalPolicy:
        """All must approve, any one vetoes; reminders at half and four fifths of the deadline, then it expires."""
        half, fifths = self.deadline_seconds // 2, self.deadline_seconds * 4 // 5
        return ApprovalPolicy(quorum="all", veto=True, escalation=(
            EscalationStep(after_seconds=half, action="remind"),
            EscalationStep(after_seconds=fifths - half, action="remind"),
            EscalationStep(after_seconds=self.deadline_seconds - fifths, action="expire"),
        ))

    @handler
    async def submit(self, draft: ContractDraft, ctx: WorkflowContext[ContractReviewRequest]) -> None:
        await ctx.set_state({"title": draft.title})
        await ctx.send_message(ContractReviewRequest(
            title=draft.title, counterparty=draft.counterparty, value=draft.value, currency=draft.currency,
            summary=draft.summary, reviewers=list(draft.reviewer_ids),
            approvers=Approvers(users=list(draft.reviewer_ids)), approval=self.policy(),
        ), target_id="request_info")

    @handler
    async def reviewed(self, answer: RequestResponse[ContractReviewRequest, ContractVote],
                       ctx: WorkflowContext[ContractReviewRequest, dict[str, Any]]) -> None:
        state = await ctx.get_state()
        votes = [{"voter": v["voter"], **({"by": v["by"]} if v.get("by") else {}),
                  "approved": bool(v["approve"]), "comment": str((v.get("result") or {}).get("comment", ""))}
                 for v in answer.votes]
        if not votes:  # a single reviewer: their answer is the only vote
            votes = [{"voter": answer.decided_by or "unknown", "approved": answer.data.approved,
                      "comment": answer.data.comment}]
        status = "signed-off" if answer.data.approved else "rejected"
        await ctx.yield_output({"status": status, "title": state["title"], "votes": votes})


def build(storage: CheckpointStorage, settings: Settings) -> Workflow:
    return human_loop(NAME, ContractDesk(settings.contract_deadline_seconds), storage)


SPEC = WorkflowSpec(name=NAME, input_model=ContractInput, build=build,
                    description="Every named legal reviewer approves; any one of them may veto.",
                    separation_of_duties=True, prepare_input=resolve_reviewers)
