"""An Agent Framework workflow hosted on the service: started, asked, answered, resumed exactly once.

The workflow (af_review.py) is plain Agent Framework 1.23; the service runs it on a real SQLite file
and, in the concurrency test, on the Redis server the test set-up starts on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hitl_core import ResponseValidationError
from hitl_core.agent_framework import HumanStep, agent_framework_workflow
from hitl_core.checkpoint import CheckpointStorage, RedisCheckpointStorage, SqliteCheckpointStorage
from hitl_core.errors import RequestAlreadyHandledError as ConflictError
from hitl_core.events import InMemoryEventPublisher
from hitl_core.service import HitlService
from hitl_core.settings import Settings
from tests.agent_framework import af_review

ALLOWED, SPEC = af_review.ALLOWED, af_review.SPEC


def service_on(storage: CheckpointStorage) -> HitlService:
    return HitlService(settings=Settings(auth_mode="dev"), storage=storage, publisher=InMemoryEventPublisher(),
                       workflows=[SPEC])


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[HitlService]:
    svc = service_on(SqliteCheckpointStorage(tmp_path / "hitl.db"))
    yield svc
    await svc.close()


async def test_the_request_is_a_typed_hitl_request_and_the_answer_resumes_agent_framework(
        service: HitlService) -> None:
    view = (await service.start("af-review", input={"topic": "otters"}, session_id="af-1")).session
    assert view.status == "pending" and len(view.pending_requests) == 1
    request = view.pending_requests[0]
    assert request.data["question"] == "Publish this draft of 5 words?"
    assert request.data["details"] == {"draft": "A short note on otters.", "words": 5}
    assert request.approvers == ["user:rita"]
    assert set(request.response_schema["properties"]) == {"approved", "feedback"}  # AF's response_type
    with pytest.raises(ResponseValidationError):
        await service.respond("af-1", request.call_id, {"approved": "perhaps"})
    with pytest.raises(ResponseValidationError):
        await service.respond("af-1", request.call_id, {"approved": True, "tip": "undeclared"})
    assert (await service.get_session("af-1")).status == "pending"  # a bad answer changed nothing
    done = await service.respond("af-1", request.call_id, {"approved": True})
    assert done.status == "completed" and done.outputs == ["published: A short note on otters."]
    records = (await service.audit("af-1", verify=True))
    assert [r.action for r in records.records][-1] == "decided" and records.verification is not None
    assert records.verification.valid


async def test_the_answer_comes_days_later_in_another_process(tmp_path: Path) -> None:
    """The Agent Framework checkpoint travels inside the session: a service built afresh on the same
    file (as another host would be) resumes it."""
    first = service_on(SqliteCheckpointStorage(tmp_path / "hitl.db"))
    view = (await first.start("af-review", input={"topic": "tides"}, session_id="af-2")).session
    await first.close()
    second = service_on(SqliteCheckpointStorage(tmp_path / "hitl.db"))
    try:
        done = await second.respond("af-2", view.pending_requests[0].call_id,
                                    {"approved": False, "feedback": "too short"})
        assert done.status == "completed" and done.outputs == ["withdrawn: too short"]
    finally:
        await second.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_200_concurrent_conflicting_decisions_run_the_response_handler_once(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    storage: CheckpointStorage
    if backend == "redis":
        storage = RedisCheckpointStorage(request.getfixturevalue("redis_url"), key_prefix=f"af-{tmp_path.name}:")
    else:
        storage = SqliteCheckpointStorage(tmp_path / "hitl.db")
    service = service_on(storage)
    try:
        topic = f"race on {backend}"
        view = (await service.start("af-review", input={"topic": topic}, session_id=f"race-{backend}")).session
        call_id = view.pending_requests[0].call_id

        async def attempt(n: int) -> Any:
            try:
                return await service.respond(f"race-{backend}", call_id, {"approved": n % 2 == 0, "feedback": str(n)})
            except ConflictError as exc:
                return exc

        outcomes = await asyncio.gather(*(attempt(n) for n in range(200)))
        winners = [o for o in outcomes if not isinstance(o, Exception)]
        assert len(winners) == 1, f"{len(winners)} decisions won"
        assert all(isinstance(o, ConflictError) for o in outcomes if o is not winners[0])
        assert af_review.PUBLISHED[f"A short note on {topic}."] == 1  # AF's response handler ran once
        final = await service.get_session(f"race-{backend}")
        assert final.status == "completed" and len(final.outputs) == 1
    finally:
        await service.close()


async def test_a_type_the_restricted_loader_refuses_fails_the_start_before_anyone_is_asked(tmp_path: Path) -> None:
    """AF pickles what JSON cannot hold; the host reads it back only through AF's restricted loader.
    A workflow whose checkpoint holds an undeclared type fails at the start, with the remedy named."""
    undeclared = agent_framework_workflow("af-review", build=af_review.build, input_model=af_review.Topic,
                                          steps=[HumanStep(approvers=["rita"])])  # DraftForReview not declared
    service = HitlService(settings=Settings(auth_mode="dev"), storage=SqliteCheckpointStorage(tmp_path / "h.db"),
                          publisher=InMemoryEventPublisher(), workflows=[undeclared])
    try:
        view = (await service.start("af-review", input={"topic": "eels"}, session_id="af-3")).session
        assert view.status == "failed" and view.pending_requests == []
        assert "allowed_checkpoint_types" in (view.error or "") and "DraftForReview" in (view.error or "")
    finally:
        await service.close()


async def test_a_deadline_from_the_declaration_answers_for_the_absent_reviewer(tmp_path: Path) -> None:
    """Agent Framework waits forever; hosted, a step's escalation chain gives its requests a deadline,
    and the deadline's answer resumes the workflow like a person's (audited as the system's)."""
    from hitl_core import ApprovalPolicy, EscalationStep

    chain = ApprovalPolicy(escalation=(EscalationStep(after_seconds=3600, action="auto_respond",
                                                      answer={"approved": False, "feedback": "nobody answered"}),))
    timed = agent_framework_workflow("af-review", build=af_review.build, input_model=af_review.Topic,
                                     steps=[HumanStep(approvers=["rita"], approval=chain)],
                                     allowed_checkpoint_types=ALLOWED)
    service = HitlService(settings=Settings(auth_mode="dev"), storage=SqliteCheckpointStorage(tmp_path / "h.db"),
                          publisher=InMemoryEventPublisher(), workflows=[timed])
    try:
        view = (await service.start("af-review", input={"topic": "owls"}, session_id="af-4")).session
        (request,) = view.pending_requests
        assert request.deadline is not None and request.created_at is not None
        assert 3590 <= (request.deadline - request.created_at).total_seconds() <= 3610
        outcome = await service.escalations.apply("af-4", request.call_id, 0)
        assert outcome.outcome == "auto_responded"
        done = await service.get_session("af-4")
        assert done.status == "completed" and done.outputs == ["withdrawn: nobody answered"]
        assert done.decisions[0]["decided_by"] == "system:auto_respond"
    finally:
        await service.close()


async def test_a_quorum_policy_collects_votes_before_agent_framework_resumes_once(tmp_path: Path) -> None:
    """An approval policy on a step: both named reviewers must approve; the first vote leaves the AF
    workflow paused, the second resumes it once with the votes recorded."""
    from hitl_core import ApprovalPolicy
    from hitl_core.access import Caller

    voted = agent_framework_workflow("af-review", build=af_review.build, input_model=af_review.Topic,
                                     steps=[HumanStep(approvers=["rita", "ron"],
                                                      approval=ApprovalPolicy(quorum="all", veto=True))],
                                     allowed_checkpoint_types=ALLOWED)
    service = HitlService(settings=Settings(auth_mode="dev"), storage=SqliteCheckpointStorage(tmp_path / "h.db"),
                          publisher=InMemoryEventPublisher(), workflows=[voted])
    try:
        view = (await service.start("af-review", input={"topic": "quorum"}, session_id="af-5")).session
        call_id = view.pending_requests[0].call_id
        first = await service.respond("af-5", call_id, {"approved": True}, caller=Caller(user="rita"))
        assert first.status == "pending" and first.outputs == []
        assert af_review.PUBLISHED.get("A short note on quorum.", 0) == 0  # AF has not resumed yet
        done = await service.respond("af-5", call_id, {"approved": True, "feedback": "fine"},
                                     caller=Caller(user="ron"))
        assert done.status == "completed" and done.outputs == ["published: A short note on quorum."]
        assert af_review.PUBLISHED["A short note on quorum."] == 1
        assert [v["voter"] for v in done.decisions[0]["votes"]] == ["rita", "ron"]
    finally:
        await service.close()
