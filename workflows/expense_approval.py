"""expense-approval — the employee's manager approves; above 1000 the finance role approves too.

Input ``{"employee": str, "amount": number > 0, "currency": str, "description": str}``. The
employee must be a person in the directory, and the first approver is **their manager there**:
the initiator does not choose who approves (an initiator-supplied ``manager`` is refused). The
employee is the requests' *subject*: they may not approve their own expense, and neither may
whoever started the session (separation of duties), compared by directory identity.
Each request expects ``{"approved": bool, "comment": str = ""}`` and walks an escalation chain
(policies as data, :class:`~hitl_core.workflow.policy.EscalationStep`): the manager's request
escalates after ``HITL_EXPENSE_MANAGER_DEADLINE_SECONDS`` to **the manager's manager** in the
directory (who replaces the manager), then expires ``HITL_EXPENSE_FINANCE_DEADLINE_SECONDS``
later; at the top of the hierarchy (no manager's manager) it goes straight on to expire. The
finance request (two distinct approvals above 10,000, one rejection ends it) expires after
``HITL_EXPENSE_FINANCE_DEADLINE_SECONDS``. Output ``{"status": "approved" | "rejected", "amount":
..., "decided_by": [...]}``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hitl_core import (
    ApprovalPolicy,
    Approvers,
    CheckpointStorage,
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
from hitl_core.workflow.policy import EscalationStep

NAME = "expense-approval"
FINANCE_THRESHOLD = 1000
FINANCE_QUORUM_THRESHOLD = 10_000


class ExpenseInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    employee: str = Field(min_length=1, max_length=200, description="The employee (directory id or e-mail).")
    amount: float = Field(gt=0, allow_inf_nan=False)
    currency: str = Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")
    description: str = Field(min_length=1, max_length=2000)


class ExpenseClaim(ExpenseInput):
    """The input completed from the directory: who the employee is, who their manager is."""

    employee_id: str
    manager_id: str


async def resolve_claim(model: BaseModel, context: StartContext) -> BaseModel:
    """The employee and their manager from the directory (the truth), not from the initiator."""
    claim = ExpenseInput.model_validate(model.model_dump())
    employee = await context.directory.person(claim.employee)
    if employee is None:
        raise InputValidationError(NAME, [{"loc": ["employee"], "msg": f"{claim.employee} is not in the directory",
                                           "type": "unknown_person"}])
    manager = await context.directory.manager_of(employee.id)
    if manager is None:
        raise InputValidationError(NAME, [{"loc": ["employee"],
                                           "msg": f"the directory names no manager for {employee.label}",
                                           "type": "no_manager"}])
    return ExpenseClaim(**claim.model_dump(), employee_id=employee.id, manager_id=manager.id)


class ApprovalDecision(BaseModel):
    approved: bool
    comment: str = Field(default="", max_length=5000)


@dataclass
class ExpenseApprovalRequest(RequestInfoMessage):
    stage: Literal["manager", "finance"] = "manager"
    employee: str = ""
    amount: float = 0.0
    currency: str = ""
    description: str = ""


class ExpenseApprover(Executor):
    def __init__(self, manager_deadline_s: int, finance_deadline_s: int) -> None:
        super().__init__(id="expenses")
        self.manager_deadline_s = manager_deadline_s
        self.finance_deadline_s = finance_deadline_s

    def _request(self, claim: dict[str, Any], stage: Literal["manager", "finance"]) -> ExpenseApprovalRequest:
        deadline: dt.datetime | None = None
        timeout_policy: dict[str, Any] | None = None
        if stage == "manager":
            approvers = Approvers(users=[claim["manager_id"]])
            # no deadline given: it is the chain's, when its escalation is due
            approval: ApprovalPolicy | None = ApprovalPolicy(escalation=(
                EscalationStep(after_seconds=self.manager_deadline_s, action="escalate", managers=True,
                               mode="replace"),
                EscalationStep(after_seconds=self.finance_deadline_s, action="expire"),
            ))
        else:
            approvers = Approvers(roles=["finance"])
            deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.finance_deadline_s)
            timeout_policy = {"action": "expire"}
            # above FINANCE_QUORUM_THRESHOLD, two distinct members of finance must approve; one rejection ends it
            approval = ApprovalPolicy(quorum=2, veto=True) if claim["amount"] > FINANCE_QUORUM_THRESHOLD else None
        return ExpenseApprovalRequest(stage=stage, employee=claim["employee"], amount=claim["amount"],
                                      currency=claim["currency"], description=claim["description"],
                                      approvers=approvers, deadline=deadline, timeout_policy=timeout_policy,
                                      subject=claim["employee_id"], approval=approval)

    @handler
    async def submit(self, claim: ExpenseClaim, ctx: WorkflowContext[ExpenseApprovalRequest]) -> None:
        state = {**claim.model_dump(), "decided_by": []}
        await ctx.set_state(state)
        await ctx.send_message(self._request(state, "manager"), target_id="request_info")

    @handler
    async def decided(
        self,
        answer: RequestResponse[ExpenseApprovalRequest, ApprovalDecision],
        ctx: WorkflowContext[ExpenseApprovalRequest, dict[str, Any]],
    ) -> None:
        state = await ctx.get_state()
        if answer.votes:  # a finance quorum: everyone who voted, in order
            state["decided_by"].extend(str(v["voter"]) for v in answer.votes)
        else:
            state["decided_by"].append(answer.decided_by or "unknown")
        await ctx.set_state(state)
        if not answer.data.approved:
            await ctx.yield_output({"status": "rejected", "amount": state["amount"], "decided_by": state["decided_by"]})
            return
        if answer.original_request.stage == "manager" and state["amount"] > FINANCE_THRESHOLD:
            await ctx.send_message(self._request(state, "finance"), target_id="request_info")
            return
        await ctx.yield_output({"status": "approved", "amount": state["amount"], "decided_by": state["decided_by"]})


def build(storage: CheckpointStorage, settings: Settings) -> Workflow:
    approver = ExpenseApprover(settings.expense_manager_deadline_seconds, settings.expense_finance_deadline_seconds)
    return human_loop(NAME, approver, storage)


SPEC = WorkflowSpec(name=NAME, input_model=ExpenseInput, build=build,
                    description="The employee's manager approves (from the directory), plus finance above 1000.",
                    separation_of_duties=True, prepare_input=resolve_claim)
