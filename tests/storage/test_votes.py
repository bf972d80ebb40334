"""Quorum votes through the service on real backends: no vote lost, the workflow resumed exactly once.

A small poll workflow asks named voters under an :class:`ApprovalPolicy`; its handler counts how
often it runs (a side effect that must happen once). Two kinds of check:

* property-based (hypothesis): random sequences of votes, duplicate votes and late votes, with
  random quorum and veto, applied one by one — the stored outcome, the HTTP-level answers and the
  audit equal a plain reference model written here, independently of ``hitl_core.workflow.policy``;
* concurrency: every voter votes at once, on each backend (SQLite, Redis, Cosmos DB stand-in and
  the rest): exactly one resume, exactly the accepted votes recorded, the others refused with 409.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hitl_core import (
    ApprovalPolicy,
    Approvers,
    CheckpointStorage,
    EscalationStep,
    Executor,
    RequestInfoExecutor,
    RequestInfoMessage,
    RequestResponse,
    SqliteCheckpointStorage,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
)
from hitl_core.access import Caller
from hitl_core.errors import RequestAlreadyHandledError, VoteAlreadyRecordedError
from hitl_core.events import InMemoryEventPublisher
from hitl_core.registry import WorkflowSpec
from hitl_core.service import HitlService
from hitl_core.settings import Settings
from hitl_core.testing import Backend

RUNS: dict[str, int] = {}


class PollInput(BaseModel):
    voters: list[str]
    quorum: int | Literal["all"]
    veto: bool
    #: An escalation chain: a reminder after an hour, expiry an hour later.
    chain: bool = False


class Vote(BaseModel):
    approved: bool
    comment: str = ""


@dataclass
class PollRequest(RequestInfoMessage):
    question: str = ""


class Poll(Executor):
    def __init__(self) -> None:
        super().__init__(id="poll")

    @handler
    async def ask(self, job: PollInput, ctx: WorkflowContext[PollRequest]) -> None:
        chain = (EscalationStep(after_seconds=3600, action="remind"),
                 EscalationStep(after_seconds=3600, action="expire")) if job.chain else ()
        await ctx.send_message(PollRequest(question="ship it?", approvers=Approvers(users=job.voters),
                                           approval=ApprovalPolicy(quorum=job.quorum, veto=job.veto,
                                                                   escalation=chain)),
                               target_id="request_info")

    @handler
    async def decided(self, answer: RequestResponse[PollRequest, Vote],
                      ctx: WorkflowContext[PollRequest, dict[str, Any]]) -> None:
        RUNS[ctx.session_id] = RUNS.get(ctx.session_id, 0) + 1  # the side effect that must happen once
        await ctx.yield_output({"approved": answer.data.approved,
                                "voters": [v["voter"] for v in answer.votes] or [answer.decided_by]})


def build(storage: CheckpointStorage, settings: Settings) -> Workflow:
    poll, request_info = Poll(), RequestInfoExecutor(id="request_info")
    return (WorkflowBuilder(name="poll").set_start_executor(poll).add_edge(poll, request_info)
            .add_edge(request_info, poll).with_checkpointing(checkpoint_storage=storage).build())


SPEC = WorkflowSpec(name="poll", input_model=PollInput, build=build)


def service_on(storage: CheckpointStorage) -> HitlService:
    return HitlService(settings=Settings(auth_mode="dev"), storage=storage, publisher=InMemoryEventPublisher(),
                       workflows=[SPEC])


# -- the reference model: written plainly, on purpose not using hitl_core.workflow.policy -------


def reference(voters: list[str], quorum: int | str, veto: bool,
              votes: list[tuple[str, bool]]) -> tuple[list[str], str | None, list[str]]:
    """(answer per vote: ok | duplicate | late, final outcome or None, accepted voters in order)."""
    needed = len(voters) if quorum == "all" else int(quorum)
    answers: list[str] = []
    accepted: list[tuple[str, bool]] = []
    outcome: str | None = None
    for voter, approve in votes:
        if outcome is not None:
            answers.append("late")
            continue
        if needed == 1:  # a single answer decides, whatever it says
            accepted.append((voter, approve))
            answers.append("ok")
            outcome = "approved" if approve else "rejected"
            continue
        if voter in [v for v, _ in accepted]:
            answers.append("duplicate")
            continue
        accepted.append((voter, approve))
        answers.append("ok")
        yes = len([a for _, a in accepted if a])
        no = len(accepted) - yes
        if yes >= needed:
            outcome = "approved"
        elif no and veto:
            outcome = "rejected"
        elif len(voters) - no < needed:
            outcome = "rejected"
    return answers, outcome, [v for v, _ in accepted]


async def cast(service: HitlService, session_id: str, call_id: str, voter: str, approve: bool) -> str:
    try:
        await service.respond(session_id, call_id, {"approved": approve}, caller=Caller(user=voter))
    except VoteAlreadyRecordedError:
        return "duplicate"
    except RequestAlreadyHandledError:
        return "late"
    return "ok"


async def play(storage: CheckpointStorage, voters: list[str], quorum: int | str, veto: bool,
               votes: list[tuple[str, bool]]) -> None:
    service = service_on(storage)
    session_id = f"p-{uuid.uuid4().hex[:10]}"
    started = await service.start("poll", session_id=session_id, caller=Caller(user="host"),
                                  input={"voters": voters, "quorum": quorum, "veto": veto})
    call_id = started.session.pending_requests[0].call_id
    answers = [await cast(service, session_id, call_id, voter, approve) for voter, approve in votes]
    expected_answers, outcome, accepted = reference(voters, quorum, veto, votes)
    assert answers == expected_answers, (voters, quorum, veto, votes)
    view = await service.get_session(session_id)
    if outcome is None:
        assert view.status == "pending" and RUNS.get(session_id, 0) == 0
        assert [v["voter"] for v in view.pending_requests[0].votes] == accepted
    else:
        assert view.status == "completed" and RUNS[session_id] == 1
        assert view.outputs == [{"approved": outcome == "approved", "voters": accepted}]
    audit = await service.audit(session_id, verify=True)
    assert audit.verification is not None and audit.verification.valid
    acts = [(r.action, r.actor) for r in audit.records if r.action in ("voted", "decided")]
    assert [actor for _, actor in acts] == accepted  # every accepted vote is in the audit, in order


VOTERS = ["ann", "bob", "cy", "dee", "eve"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[str], int | str, bool, list[tuple[str, bool]]]:
    voters = VOTERS[: draw(st.integers(min_value=2, max_value=5))]
    quorum: int | str = draw(st.one_of(st.integers(min_value=1, max_value=len(voters)), st.just("all")))
    veto = draw(st.booleans())
    votes = draw(st.lists(st.tuples(st.sampled_from(voters), st.booleans()), min_size=1, max_size=9))
    return voters, quorum, veto, votes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_votes_match_the_reference_model_on_sqlite(tmp_path: Path, scenario: Any) -> None:
    on_fresh_sqlite(tmp_path, play, *scenario)


def on_fresh_sqlite(tmp_path: Path, scenario: Callable[..., Awaitable[None]], *args: Any) -> None:
    """Run one hypothesis example on a SQLite file of its own (examples must not see each other's sessions)."""
    async def run() -> None:
        storage = SqliteCheckpointStorage(tmp_path / f"{uuid.uuid4().hex}.db")
        try:
            await scenario(storage, *args)
        finally:
            await storage.close()

    asyncio.run(run())


@pytest.fixture
async def voting(backend: Backend) -> AsyncIterator[HitlService]:
    yield service_on(backend.storage)


CONCURRENT = [(4, 10, 4), ("all", 6, 6)]


@pytest.mark.parametrize(("quorum", "voters", "accepted"), CONCURRENT)
async def test_concurrent_votes_lose_none_and_resume_once(voting: HitlService, quorum: int | str, voters: int,
                                                          accepted: int) -> None:
    await everyone_votes_at_once(voting, quorum, voters, accepted)


async def everyone_votes_at_once(voting: HitlService, quorum: int | str, voters: int, accepted: int) -> None:
    """All voters at once: ``accepted`` votes count, the rest are late (409), one resume."""
    names = [f"voter{i}" for i in range(voters)]
    session_id = f"c-{uuid.uuid4().hex[:10]}"
    started = await voting.start("poll", session_id=session_id, caller=Caller(user="host"),
                                 input={"voters": names, "quorum": quorum, "veto": False})
    call_id = started.session.pending_requests[0].call_id
    answers = await asyncio.gather(*(cast(voting, session_id, call_id, name, True) for name in names))
    assert answers.count("ok") == accepted and answers.count("late") == voters - accepted, answers
    view = await voting.get_session(session_id)
    assert view.status == "completed" and RUNS[session_id] == 1
    (decision,) = view.decisions
    winners = [name for name, answer in zip(names, answers, strict=True) if answer == "ok"]
    assert sorted(v["voter"] for v in decision["votes"]) == sorted(winners)
    audit = await voting.audit(session_id, verify=True)
    assert audit.verification is not None and audit.verification.valid
    assert sorted(r.actor or "" for r in audit.records if r.action in ("voted", "decided")) == sorted(winners)
