"""Each workflow chooses how a decision resumes it, and the service honours the choice.

content-review's handlers only touch workflow state, so it resumes optimistically: a decision is
one read and one conditional write, and of many concurrent decisions exactly one commits (the
others learn it was decided; the output and the audit hold one decision). expense-approval keeps
the default claim: a first write records the decision before its handlers run, so they run once
even across processes. Real SQLite, the demo directory, people as the local host knows them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import workflows
from hitl_core import SqliteCheckpointStorage
from hitl_core.access import Caller
from hitl_core.directory import FileDirectory
from hitl_core.errors import RequestAlreadyHandledError
from hitl_core.events import InMemoryEventPublisher
from hitl_core.service import HitlService
from hitl_core.settings import Settings

DEMO_DIRECTORY = Path(__file__).resolve().parents[2] / "devhost" / "demo-directory.json"


class CountingStorage:
    """The SQLite storage, counting the saves the service asks for."""

    def __init__(self, inner: SqliteCheckpointStorage) -> None:
        self.inner = inner
        self.saves = 0

    async def save(self, *args: Any, **kwargs: Any) -> str:
        self.saves += 1
        return await self.inner.save(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def service_on(storage: Any) -> HitlService:
    return HitlService(settings=Settings(auth_mode="dev"), storage=storage, publisher=InMemoryEventPublisher(),
                       workflows=workflows.ALL, directory=FileDirectory.from_path(DEMO_DIRECTORY))


def as_(user: str) -> Caller:
    return Caller(user=user, source="test")


async def test_a_content_review_decision_is_one_conditional_write_and_only_one_of_many_commits(
        tmp_path: Path) -> None:
    storage = CountingStorage(SqliteCheckpointStorage(tmp_path / "s.db"))
    service = service_on(storage)
    assert service.workflows["content-review"].resume_mode == "optimistic"
    started = await service.start("content-review", session_id="one", input={"draft": "d"}, caller=as_("mona"))
    call_id = started.session.pending_requests[0].call_id
    storage.saves = 0
    view = await service.respond("one", call_id, {"approved": True}, caller=as_("rita"))
    assert view.status == "completed" and storage.saves == 1

    started = await service.start("content-review", session_id="many", input={"draft": "d"}, caller=as_("mona"))
    call_id = started.session.pending_requests[0].call_id
    answers = [{"approved": i % 2 == 0, "feedback": f"answer {i}"} for i in range(20)]
    outcomes = await asyncio.gather(*(service.respond("many", call_id, answer, caller=as_(("rita", "ron")[i % 2]))
                                      for i, answer in enumerate(answers)), return_exceptions=True)
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1 and all(isinstance(o, RequestAlreadyHandledError) for o in lost), outcomes
    decided = (await service.get_session("many", caller=as_("ada"))).decisions
    assert len(decided) == 1 and decided[0]["result"] == won[0].decisions[0]["result"]
    assert all(isinstance(o, RequestAlreadyHandledError) and o.decision["result"] == decided[0]["result"]
               for o in lost)
    records = (await service.audit("many", verify=True)).records
    assert [r.action for r in records] == ["started", "decided"]
    await storage.inner.close()


async def test_an_expense_decision_is_claimed_before_its_handlers_run(tmp_path: Path) -> None:
    storage = CountingStorage(SqliteCheckpointStorage(tmp_path / "s.db"))
    service = service_on(storage)
    assert service.workflows["expense-approval"].resume_mode == "claim"
    started = await service.start("expense-approval", session_id="exp", caller=as_("ed"), input={
        "employee": "ed", "amount": 200, "currency": "EUR", "description": "train"})
    call_id = started.session.pending_requests[0].call_id
    storage.saves = 0
    view = await service.respond("exp", call_id, {"approved": True}, caller=as_("amy"))
    assert view.status == "completed" and storage.saves == 2  # the claim, then the continuation's commit
    await storage.inner.close()
