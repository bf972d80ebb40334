"""refund-agent — an Agent Framework agent whose ``refund`` tool a person must approve.

The agent itself is plain Microsoft Agent Framework (workflows/refund_agent_af.py: an agent with
``refund`` declared ``approval_mode="always_require"``, driven here by a scripted chat client
that stands in for the language model). This module only declares it to the service: its start
input, and who approves a call of ``refund`` — anyone of the ``reviewers`` role up to
``APPROVAL_THRESHOLD`` (100 in the claim's currency), the ``finance`` role above it.

Input ``{"order": "A-1001", "amount": 250.0, "currency": "EUR", "reason": "parcel arrived broken"}``.
The request shows the call (``refund(order='A-1001', amount=250.0, ...)``) and takes
``{"approved": bool, "reason": str = ""}``; the output is the agent's answer to the customer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from hitl_core.agent_framework import HumanStep, agent_framework_workflow
from hitl_core.registry import WorkflowSpec

from .refund_agent_af import (
    APPROVAL_THRESHOLD,
    REFUND_TOOL_NAME,
    WORKFLOW_NAME,
    RefundClaim,
    build_refund_workflow,
)

NAME = WORKFLOW_NAME


class RefundInput(BaseModel):
    order: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*$")
    amount: float = Field(gt=0, le=1_000_000)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    reason: str = Field(min_length=1, max_length=2_000)


def approvers(details: dict[str, Any], start_input: dict[str, Any]) -> list[str]:
    """The reviewers role approves small refunds; above the threshold, finance does."""
    amount = float(details.get("arguments", {}).get("amount", start_input.get("amount", 0)))
    return ["role:finance"] if amount > APPROVAL_THRESHOLD else ["role:reviewers"]


def question(details: dict[str, Any]) -> str:
    args = details.get("arguments", {})
    amount, currency, order = float(args.get("amount", 0)), args.get("currency", ""), args.get("order", "?")
    return f"Approve a refund of {amount:.2f} {currency} for order {order}?"


def claim(model: BaseModel) -> RefundClaim:
    data = model.model_dump()
    return RefundClaim(order=data["order"], amount=data["amount"], currency=data["currency"], reason=data["reason"])


SPEC: WorkflowSpec = agent_framework_workflow(
    NAME,
    build=build_refund_workflow,
    input_model=RefundInput,
    first_message=claim,
    steps=[HumanStep(tool=REFUND_TOOL_NAME, approvers=approvers, question=question)],
    allowed_checkpoint_types=["workflows.refund_agent_af:RefundClaim"],
    description="An Agent Framework agent refunds an order once a person approves the call "
                f"(finance above {APPROVAL_THRESHOLD:.0f}).",
)
