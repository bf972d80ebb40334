"""Approval policies as data: how many distinct approvals resolve a request, and what a rejection does.

A request may carry an :class:`ApprovalPolicy`. Without one (or with ``quorum=1``) the first
answer decides, exactly as before. With a quorum, each approver's answer is a **vote**: a person
votes at most once, and the request resolves when

* ``veto`` is on (the default) and any vote rejects: rejected at once, by that vote;
* the number of approving votes reaches the quorum (an integer, or ``"all"``: every named user);
* ``veto`` is off and so many have rejected that the quorum can no longer be reached: rejected.

Whether a vote approves is read from the answer's ``decision_field`` (default ``approved``, a
boolean in the response type). The vote that resolves the request is the *deciding answer*:
it is what the workflow receives as ``RequestResponse.data``, with every vote in
``RequestResponse.votes``. :func:`tally` is the whole rule, written once, so the service and
the tests' reference model cannot disagree.

A policy may also carry an **escalation chain**: ordered :class:`EscalationStep` s, each due
``after_seconds`` after the previous one was applied (the first counts from the request's
creation): ``remind`` the approvers, ``escalate`` to other approvers (named ones, and/or the
directory managers of the current ones; added or instead), ``auto_respond`` with a declared answer,
or ``expire``. :mod:`hitl_core.escalation` walks it (the legacy ``deadline`` + ``timeout_policy``
of a request reads as a one- or two-step chain there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Outcome = Literal["pending", "approved", "rejected"]
StepAction = Literal["remind", "escalate", "auto_respond", "expire"]
#: Step actions that take the request away from its current approvers (the request's deadline is the next of these).
TAKES_AWAY: frozenset[str] = frozenset({"escalate", "auto_respond", "expire"})


class EscalationStep(BaseModel):
    """One step of an escalation chain: what happens when nobody decided ``after_seconds`` after the previous step.

    ``escalate`` names new approvers in ``to`` (``user:x``, ``role:y``; a plain string is a user)
    and/or asks for the directory ``managers`` of the current approvers who are users, which are
    added to the approvers (``mode="add"``) or replace them (``"replace"``, the default).
    ``auto_respond`` answers with ``answer``, validated by the request's response type when applied.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    after_seconds: int = Field(
        ge=0, description="Delay after the previous step (the first: after the request's creation).")
    action: StepAction
    to: list[str] = Field(default_factory=list, description="escalate: approver entries to escalate to.")
    managers: bool = Field(default=False,
                           description="escalate: the directory managers of the current user approvers.")
    mode: Literal["add", "replace"] = Field(default="replace",
                                            description="escalate: add to, or replace, the approvers.")
    answer: dict[str, Any] | None = Field(default=None, description="auto_respond: the answer given.")

    @model_validator(mode="after")
    def _complete(self) -> EscalationStep:
        if self.action == "escalate" and not (self.to or self.managers):
            raise ValueError("an escalate step needs 'to' (approvers) or 'managers': true")
        if self.action == "auto_respond" and self.answer is None:
            raise ValueError("an auto_respond step needs 'answer'")
        if self.action != "escalate" and (self.to or self.managers):
            raise ValueError(f"'to' and 'managers' belong to escalate steps, not {self.action}")
        if self.action != "auto_respond" and self.answer is not None:
            raise ValueError(f"'answer' belongs to auto_respond steps, not {self.action}")
        return self

    @property
    def takes_away(self) -> bool:
        """Whether the step takes the request from its current approvers (escalate, auto_respond, expire)."""
        return self.action in TAKES_AWAY


def first_deadline_offset(steps: Sequence[EscalationStep]) -> int | None:
    """Seconds from the chain's start to its first step that takes the request away (None: there is none)."""
    total = 0
    for step in steps:
        total += step.after_seconds
        if step.takes_away:
            return total
    return None


class ApprovalPolicy(BaseModel):
    """How a request with several approvers resolves (serialisable: kept in checkpoints and events)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quorum: int | Literal["all"] = Field(default=1, description="Distinct approvals needed; 'all': every named user.")
    veto: bool = Field(default=True, description="One rejection ends the request at once.")
    decision_field: str = Field(default="approved", description="The answer's boolean field that says approve.")
    others_may_answer_claimed: bool = Field(
        default=False, description="Whether approvers other than the claimer may answer while a claim lasts.")
    escalation: tuple[EscalationStep, ...] = Field(
        default=(), description="What happens, step by step, while nobody decides (see EscalationStep).")

    def needed(self, named_users: int) -> int:
        """Approvals that resolve the request."""
        return max(1, named_users) if self.quorum == "all" else max(1, int(self.quorum))

    @property
    def votes(self) -> bool:
        """Whether answers are collected as votes (more than one approval may be needed)."""
        return self.quorum == "all" or int(self.quorum) > 1

    @property
    def stored(self) -> bool:
        """Whether the request must keep this policy (votes, a non-default claim rule, or an escalation chain)."""
        return self.votes or self.others_may_answer_claimed or bool(self.escalation)


@dataclass(frozen=True)
class Ballot:
    """One counted vote: who, whether it approves."""

    voter: str
    approve: bool


def approves(answer: Any, field: str) -> bool:
    """Whether an answer (a validated model, dataclass or mapping) approves."""
    value = answer.get(field) if isinstance(answer, dict) else getattr(answer, field, None)
    return value is True


def tally(policy: ApprovalPolicy, ballots: Sequence[Ballot], *, named_users: int, eligible: int | None) -> Outcome:
    """The outcome of these votes (in order; a voter's later votes are ignored).

    ``named_users``: users the request names (for ``quorum="all"``); ``eligible``: how many
    distinct people may vote at all (None: unknown, so "can no longer be reached" is not decided
    early without a veto).
    """
    needed = policy.needed(named_users)
    seen: set[str] = set()
    approvals = rejections = 0
    for ballot in ballots:
        if ballot.voter in seen:
            continue
        seen.add(ballot.voter)
        if ballot.approve:
            approvals += 1
            if approvals >= needed:
                return "approved"
        else:
            rejections += 1
            if policy.veto:
                return "rejected"
            if eligible is not None and eligible - rejections < needed:
                return "rejected"
    return "pending"
