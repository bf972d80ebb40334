"""The deployment's workflows. ``ALL`` is what function_app.py registers."""

from hitl_core.registry import WorkflowSpec

from . import content_review, contract_signoff, expense_approval, refund_agent

ALL: tuple[WorkflowSpec, ...] = (content_review.SPEC, expense_approval.SPEC, contract_signoff.SPEC, refund_agent.SPEC)
