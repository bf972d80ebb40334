"""contract-signoff's inputs: every reviewer a known person of the legal role, each once, never the initiator.

A refused start answers 422 naming the offending list entry, and stores nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hitl_core.errors import SessionNotFoundError
from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime

from .conftest import call, http
from .test_authorization import who
from .test_claims import runtime_with

CONTRACT = {"title": "Cloud hosting", "counterparty": "Nimbus", "value": 1000, "currency": "EUR",
            "summary": "Three years."}


@pytest.fixture
async def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InMemoryEventPublisher]:
    async for publisher in runtime_with(tmp_path, monkeypatch):
        yield publisher


async def start(session_id: str, reviewers: list[str], by: str = "mona") -> tuple[int, Any]:
    status, body, _ = await call("start_session", http(
        "POST", "/api/workflows/contract-signoff/sessions", route={"workflow": "contract-signoff"},
        body={"session_id": session_id, "input": {**CONTRACT, "legal_reviewers": reviewers}}, headers=who(by)))
    return status, body


@pytest.mark.parametrize(("reviewers", "by", "index", "kind"), [
    (["lena", "nobody-known"], "mona", 1, "unknown_person"),
    (["ron"], "mona", 0, "not_legal"),
    (["leo", "lena"], "lena", 1, "separation_of_duties"),
    (["lena", "Lena@Example.com"], "mona", 1, "duplicate"),
])
async def test_bad_reviewer_lists_are_refused_and_store_nothing(directory: InMemoryEventPublisher,
                                                                reviewers: list[str], by: str, index: int,
                                                                kind: str) -> None:
    status, problem = await start("bad", reviewers, by)
    assert status == 422, problem
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(["legal_reviewers", index], kind)]
    with pytest.raises(SessionNotFoundError):
        await get_runtime().service.get_session("bad")


async def test_every_reviewer_must_approve_and_one_veto_ends_it(directory: InMemoryEventPublisher) -> None:
    status, view = await start("k-1", ["lena", "leo"])
    assert status == 201, view
    request = view["pending_requests"][0]
    assert request["approvers"] == ["user:lena", "user:leo"]
    assert request["approval"]["quorum"] == "all" and request["approval"]["veto"] is True
    steps = [(s["action"], s["after_seconds"]) for s in request["approval"]["escalation"]]
    assert steps == [("remind", 216000), ("remind", 129600), ("expire", 86400)]  # of the default 5 days
    lifetime = dt.datetime.fromisoformat(request["deadline"]) - dt.datetime.fromisoformat(request["created_at"])
    assert abs(lifetime.total_seconds() - 432000) < 5  # the deadline is the chain's expiry
    call_id = request["call_id"]

    def vote(by: str, approved: bool, comment: str = "") -> Any:
        return call("post_response", http("POST", "/api/sessions/k-1/responses", route={"session_id": "k-1"},
                                          body={"call_id": call_id, "result": {"approved": approved,
                                                                               "comment": comment}},
                                          headers=who(by)))

    status, body, _ = await vote("lena", True)
    assert status == 200 and body["status"] == "pending"
    status, body, _ = await vote("ron", True)
    assert status == 404  # not a reviewer of this contract: he does not see it
    status, body, _ = await vote("leo", False, "clause 7 is unacceptable")
    assert status == 200 and body["status"] == "completed"
    assert body["outputs"] == [{"status": "rejected", "title": "Cloud hosting", "votes": [
        {"voter": "lena", "approved": True, "comment": ""},
        {"voter": "leo", "approved": False, "comment": "clause 7 is unacceptable"}]}]
