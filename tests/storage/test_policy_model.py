"""Votes, claims and out-of-office delegations together, against a plain reference model.

The poll workflow of tests/storage/test_votes.py asks named voters under a random quorum and veto.
Hypothesis draws sequences of acts by voters and by outsiders (``sam``, ``tom``): votes, claims,
releases, delegations set and ended, and — when the request has an escalation chain (a reminder,
then expiry) — the deadline orchestration applying a step, again or out of turn. Each act goes
through the service; its answer, the stored outcome, the votes (who for whom), the one resume and
the audit must equal what the model below says — written plainly here, on purpose without the
service's own rules. A concurrency check then has voters and delegates voting at once on every
backend.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hitl_core import CheckpointStorage
from hitl_core.access import Caller
from hitl_core.delegation import DelegationBody
from hitl_core.errors import (
    DelegationRefusedError,
    NotAuthorizedError,
    RequestAlreadyHandledError,
    RequestClaimedError,
    SessionNotFoundError,
    VoteAlreadyRecordedError,
)
from hitl_core.service import HitlService
from hitl_core.testing import Backend

from .test_votes import RUNS, on_fresh_sqlite, service_on

VOTERS = ["ann", "bob", "cy", "dee"]
OUTSIDERS = ["sam", "tom"]
PEOPLE = VOTERS + OUTSIDERS


@dataclass
class Model:
    """What should happen, act by act."""

    voters: list[str]
    needed: int
    veto: bool
    delegations: dict[str, str] = field(default_factory=dict)  # delegator -> delegate
    votes: list[tuple[str, str | None, bool]] = field(default_factory=list)  # (voter, by, approve)
    outcome: str | None = None
    step: int = 0  # the escalation chain's next step: 0 remind, 1 expire
    claim: str | None = None
    acted: set[str] = field(default_factory=set)  # outsiders who acted keep sight of the session

    def voted(self) -> set[str]:
        return {voter for voter, _, _ in self.votes}

    def acting_for(self, person: str) -> str | None:
        """Whom ``person`` votes as: themselves if a voter, else the first delegator who has not voted."""
        if person in self.voters:
            return person
        free = sorted(a for a, d in self.delegations.items() if d == person and a in self.voters
                      and a not in self.voted())
        return free[0] if free else None

    def may_see(self, person: str) -> bool:
        # the service's rule: those who may read (approvers, and a delegate once they acted), widened to
        # their delegates while the delegation lasts (a delegate of a delegate who acted reads too)
        return person in self.voters or person in self.acted or \
            any(d == person and (a in self.voters or a in self.acted) for a, d in self.delegations.items())

    def vote(self, person: str, approve: bool) -> str:
        if not self.may_see(person):
            return "refused"
        if self.outcome is not None:
            return "late"
        voter = self.acting_for(person)
        if voter is None:
            return "refused"
        if self.claim is not None and self.claim != person:
            return "claimed"
        if voter in self.voted():
            return "duplicate"
        by = None if voter == person else person
        if by:
            self.acted.add(person)
        self.votes.append((voter, by, approve))
        yes = sum(1 for _, _, a in self.votes if a)
        no = len(self.votes) - yes
        if self.needed == 1:
            self.outcome = "approved" if approve else "rejected"
        elif yes >= self.needed:
            self.outcome = "approved"
        elif no and self.veto:
            self.outcome = "rejected"
        elif len(self.voters) - no < self.needed:
            self.outcome = "rejected"
        return "ok"

    def take(self, person: str, release: bool) -> str:
        if not self.may_see(person):
            return "refused"
        if self.outcome is not None:
            return "late"
        if release:
            if self.claim is not None and self.claim != person:
                return "refused"
            self.claim = None
            return "ok"
        if self.acting_for(person) is None:  # only someone who may still decide may claim
            return "refused"
        if self.claim is not None and self.claim != person:
            return "claimed"
        self.claim = person
        return "ok"

    def escalate(self, index: int) -> str:
        """The deadline orchestration applies step ``index`` (perhaps again, perhaps late)."""
        if self.outcome is not None:
            return "decided"
        if index != self.step:
            return "skipped"
        self.step += 1
        if index == 0:
            return "reminded"
        self.outcome, self.claim = "expired", None
        return "expired"

    def delegate(self, delegator: str, delegate: str) -> str:
        step, seen = delegate, {delegator, delegate}
        while step in self.delegations:
            step = self.delegations[step]
            if step == delegator:
                return "cycle"
            if step in seen:
                break
            seen.add(step)
        self.delegations[delegator] = delegate
        return "ok"


Act = tuple[str, str, Any]


async def perform(service: HitlService, session_id: str, call_id: str, act: Act) -> str:
    kind, person, arg = act
    caller = Caller(user=person)
    try:
        if kind == "vote":
            await service.respond(session_id, call_id, {"approved": arg}, caller=caller)
        elif kind in ("claim", "release"):
            await service.claim(session_id, call_id, caller=caller, release=kind == "release")
        elif kind == "delegate":
            ends = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
            await service.delegations.put(person, DelegationBody(delegate=arg, ends_at=ends), caller)
        elif kind == "end":
            await service.delegations.end(person, caller)
        elif kind == "step":
            return (await service.escalations.apply(session_id, call_id, arg)).outcome
    except (NotAuthorizedError, SessionNotFoundError):
        return "refused"
    except RequestClaimedError:
        return "claimed"
    except VoteAlreadyRecordedError:
        return "duplicate"
    except RequestAlreadyHandledError:
        return "late"
    except DelegationRefusedError as exc:
        return exc.kind
    return "ok"


def expected(model: Model, act: Act) -> str:
    kind, person, arg = act
    if kind == "vote":
        return model.vote(person, arg)
    if kind in ("claim", "release"):
        return model.take(person, kind == "release")
    if kind == "delegate":
        return model.delegate(person, arg)
    if kind == "step":
        return model.escalate(arg)
    model.delegations.pop(person, None)
    return "ok"


async def play(storage: CheckpointStorage, voters: list[str], quorum: int | str, veto: bool, chain: bool,
               acts: list[Act]) -> None:
    service = service_on(storage)
    session_id = f"m-{uuid.uuid4().hex[:10]}"
    started = await service.start("poll", session_id=session_id, caller=Caller(user="host"),
                                  input={"voters": voters, "quorum": quorum, "veto": veto, "chain": chain})
    call_id = started.session.pending_requests[0].call_id
    model = Model(voters=voters, needed=len(voters) if quorum == "all" else int(quorum), veto=veto)
    for act in acts:
        answer = await perform(service, session_id, call_id, act)
        assert answer == expected(model, act), (act, acts, voters, quorum, veto)
    view = await service.get_session(session_id)
    votes = [(voter, by) for voter, by, _ in model.votes]
    if model.outcome == "expired":  # nobody decided in time: the session failed, the workflow never resumed
        assert view.status == "failed" and RUNS.get(session_id, 0) == 0
        assert [d["outcome"] for d in view.decisions] == ["expired"]
    elif model.outcome is None:
        assert view.status == "pending" and RUNS.get(session_id, 0) == 0
        stored = view.pending_requests[0]
        assert [(v["voter"], v.get("by")) for v in stored.votes] == votes
        assert stored.claimed_by == model.claim
    else:
        assert view.status == "completed" and RUNS[session_id] == 1
        # one answer decides a quorum-1 request: the poll reports its decider (a delegate: them, not whom for)
        deciders = [v for v, _ in votes] if model.needed > 1 else [by or voter for voter, by in votes]
        assert view.outputs == [{"approved": model.outcome == "approved", "voters": deciders}]
    audit = await service.audit(session_id, verify=True)
    assert audit.verification is not None and audit.verification.valid
    recorded = [(r.detail.get("on_behalf_of") or r.actor, r.actor if r.detail.get("on_behalf_of") else None)
                for r in audit.records if r.action in ("voted", "decided")]
    assert recorded == votes  # every accepted vote is in the audit, in order, "by" whom


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[str], int | str, bool, bool, list[Act]]:
    voters = VOTERS[: draw(st.integers(min_value=2, max_value=4))]
    quorum: int | str = draw(st.one_of(st.integers(min_value=1, max_value=len(voters)), st.just("all")))
    veto = draw(st.booleans())
    person = st.sampled_from(PEOPLE)
    vote = st.tuples(st.just("vote"), person, st.booleans())
    claim = st.tuples(st.sampled_from(["claim", "release"]), person, st.none())
    delegate = person.flatmap(lambda p: st.tuples(st.just("delegate"), st.just(p),
                                                  st.sampled_from([q for q in PEOPLE if q != p])))
    end = st.tuples(st.just("end"), person, st.none())
    chain = draw(st.booleans())
    step = st.tuples(st.just("step"), st.just("system"), st.integers(min_value=0, max_value=1))
    kinds = [vote, vote, claim, delegate, delegate, end, *([step, step] if chain else [])]
    acts = draw(st.lists(st.one_of(*kinds), min_size=1, max_size=14))
    return voters, quorum, veto, chain, acts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
@example(scenario=(["ann", "bob"], 2, False, True, [
    ("step", "system", 0), ("step", "system", 0), ("vote", "ann", True), ("step", "system", 1), ("vote", "bob", True),
    ("claim", "bob", None)]))
@example(scenario=(["ann", "bob", "cy"], "all", True, False, [
    ("delegate", "ann", "sam"), ("vote", "sam", True), ("delegate", "bob", "sam"), ("claim", "sam", None),
    ("vote", "cy", True), ("vote", "sam", True)]))
def test_votes_claims_and_delegations_match_the_model_on_sqlite(tmp_path: Path, scenario: Any) -> None:
    on_fresh_sqlite(tmp_path, play, *scenario)


async def voters_and_delegates_vote_at_once(service: HitlService, voters: int, delegated: int) -> None:
    """``voters`` named, the first ``delegated`` of them away with a delegate each; everyone who may
    vote votes at once under quorum "all": every vote counts once, one resume."""
    names = [f"v{i}-{uuid.uuid4().hex[:6]}" for i in range(voters)]
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    for name in names[:delegated]:
        await service.delegations.put(name, DelegationBody(delegate=f"d-{name}", ends_at=ends), Caller(user=name))
    session_id = f"md-{uuid.uuid4().hex[:10]}"
    started = await service.start("poll", session_id=session_id, caller=Caller(user="host"),
                                  input={"voters": names, "quorum": "all", "veto": False})
    call_id = started.session.pending_requests[0].call_id
    actors = [f"d-{n}" for n in names[:delegated]] + names[delegated:]
    answers = await asyncio.gather(*(perform(service, session_id, call_id, ("vote", a, True)) for a in actors))
    assert answers == ["ok"] * voters, answers
    view = await service.get_session(session_id)
    assert view.status == "completed" and RUNS[session_id] == 1
    (decision,) = view.decisions
    assert sorted((v["voter"], v.get("by")) for v in decision["votes"]) == sorted(
        [(n, f"d-{n}") for n in names[:delegated]] + [(n, None) for n in names[delegated:]])


async def test_voters_and_delegates_at_once(backend: Backend) -> None:
    if backend.clock is not None:  # the conformance clock starts in 2030; delegations are judged by today's
        backend.clock.now = time.time()
    await voters_and_delegates_vote_at_once(service_on(backend.storage), 6, 3)


async def test_a_burst_with_duplicates_and_strangers_answers_each_caller(backend: Backend) -> None:
    await burst_with_duplicates_and_strangers(service_on(backend.storage))


async def burst_with_duplicates_and_strangers(service: HitlService) -> None:
    """Votes sharing a write never swallow another caller's answer: in one burst, every named voter's first
    vote counts, a second vote by the same person gets 409 with the first, a stranger is refused (and
    audited), and the request resolves exactly once."""
    names = [f"b{i}-{uuid.uuid4().hex[:6]}" for i in range(8)]
    session_id = f"mb-{uuid.uuid4().hex[:10]}"
    started = await service.start("poll", session_id=session_id, caller=Caller(user="host"),
                                  input={"voters": names, "quorum": "all", "veto": False})
    call_id = started.session.pending_requests[0].call_id
    acts: list[Act] = [("vote", n, True) for n in names] + [("vote", names[2], True), ("vote", "mallory", True)]
    answers = await asyncio.gather(*(perform(service, session_id, call_id, act) for act in acts))
    assert answers[:8] == ["ok"] * 8, answers
    assert answers[8] in ("duplicate", "late") and answers[9] == "refused", answers
    view = await service.get_session(session_id)
    assert view.status == "completed" and RUNS[session_id] == 1
    assert sorted(v["voter"] for v in view.decisions[0]["votes"]) == sorted(names)
    audit = await service.audit(session_id, verify=True)
    assert audit.verification is not None and audit.verification.valid
    assert sorted(r.actor or "" for r in audit.records if r.action in ("voted", "decided")) == sorted(names)
    assert [r.actor for r in audit.records if r.action == "refused"] == ["mallory"]
