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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["pending", "approved", "rejected"]


class ApprovalPolicy(BaseModel):
    """How a request with several approvers resolves (serialisable: kept in checkpoints and events)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quorum: int | Literal["all"] = Field(default=1, description="Distinct approvals needed; 'all': every named user.")
    veto: bool = Field(default=True, description="One rejection ends the request at once.")
    decision_field: str = Field(default="approved", description="The answer's boolean field that says approve.")
    others_may_answer_claimed: bool = Field(
        default=False, description="Whether approvers other than the claimer may answer while a claim lasts.")

    def needed(self, named_users: int) -> int:
        """Approvals that resolve the request."""
        return max(1, named_users) if self.quorum == "all" else max(1, int(self.quorum))

    @property
    def votes(self) -> bool:
        """Whether answers are collected as votes (more than one approval may be needed)."""
        return self.quorum == "all" or int(self.quorum) > 1

    @property
    def stored(self) -> bool:
        """Whether the request must keep this policy (votes, or a non-default claim rule)."""
        return self.votes or self.others_may_answer_claimed


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
