"""Out-of-office delegation through the HTTP functions, with the demo directory.

amy (erin's manager) goes on leave and hands her approvals to ron: ron sees her requests, decides
them as "ron for amy", receives her notifications; refusals (oneself, a cycle, someone else's
delegation, a delegate who is the request's subject) answer precisely and change nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime
from hitl_core.notify.models import RequestView as NotifiedRequest

from .conftest import call, http
from .test_authorization import decide, start_expense, who
from .test_claims import runtime_with


@pytest.fixture
async def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InMemoryEventPublisher]:
    async for publisher in runtime_with(tmp_path, monkeypatch):
        yield publisher


def later(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


async def delegation(method: str, user: str, by: str | None, body: Any = None) -> tuple[int, Any]:
    status, data, _ = await call("delegations", http(method, f"/api/delegations/{user}", body=body,
                                                     route={"user": user}, headers=who(by)))
    return status, data


async def away(user: str, delegate: str, by: str | None = None, **period: Any) -> tuple[int, Any]:
    body = {"delegate": delegate, "ends_at": later(days=7), "reason": "on leave", **period}
    return await delegation("PUT", user, by or user, body)


async def respond_for(session_id: str, call_id: str, by: str, on_behalf_of: str | None,
                      approved: bool = True) -> tuple[int, Any]:
    body: dict[str, Any] = {"call_id": call_id, "result": {"approved": approved}}
    if on_behalf_of is not None:
        body["on_behalf_of"] = on_behalf_of
    status, data, _ = await call("post_response", http("POST", f"/api/sessions/{session_id}/responses",
                                                       route={"session_id": session_id}, body=body, headers=who(by)))
    return status, data


async def inbox(user: str) -> list[str]:
    status, page, _ = await call("list_requests", http("GET", "/api/requests", headers=who(user)))
    assert status == 200, page
    return [item["session_id"] for item in page["items"]]


async def test_a_delegate_sees_and_decides_for_the_absent_manager(directory: InMemoryEventPublisher) -> None:
    _, view = await start_expense("d-1")
    call_id = view["pending_requests"][0]["call_id"]
    assert (await decide("d-1", call_id, "ron"))[0] == 404  # not his request: the session does not exist for him
    assert "d-1" not in await inbox("ron")

    status, set_ = await away("amy@example.com", "Ron@Example.com")
    assert status == 200, set_
    assert set_["delegator"] == "amy" and set_["delegate"] == "ron" and set_["active"] and set_["set_by"] == "amy"
    assert "d-1" in await inbox("ron")
    recipients = await get_runtime().service.notification_recipients(
        NotifiedRequest.model_validate(view["pending_requests"][0]))
    assert [(r.person_id, r.on_behalf_of) for r in recipients] == [("ron", "amy")]

    status, body = await decide("d-1", call_id, "ron")
    assert status == 200, body
    decision = body["decisions"][0]
    assert decision["decided_by"] == "ron" and decision["on_behalf_of"] == "amy"
    records = (await get_runtime().service.audit("d-1")).records
    decided = next(r for r in records if r.action == "decided")
    assert decided.actor == "ron" and decided.detail["on_behalf_of"] == "amy"
    # amy's request is gone; the next one is finance's: ron is not in finance and holds no delegation for it
    finance = body["pending_requests"][0]["call_id"]
    assert (await decide("d-1", finance, "ron"))[0] == 403
    # having acted, ron still reads the session he decided on
    status, _, _ = await call("get_session", http("GET", "/api/sessions/d-1", route={"session_id": "d-1"},
                                                  headers=who("ron")))
    assert status == 200


async def test_refused_delegations_change_nothing(directory: InMemoryEventPublisher) -> None:
    status, problem = await away("amy", "amy")
    assert status == 422 and problem["kind"] == "self"
    status, problem = await away("amy", "nobody-known")
    assert status == 422 and problem["kind"] == "unknown_person"
    status, problem = await away("amy", "ron", ends_at=later(days=-1))
    assert status == 422 and problem["kind"] == "period"
    status, problem = await away("amy", "ron", ends_at=later(days=400))
    assert status == 422 and problem["kind"] == "period"
    status, problem = await away("amy", "ron", by="ed")
    assert status == 403, problem
    status, problem = await delegation("PUT", "amy", "amy", {"delegate": "ron", "ends_at": "2026-12-24T00:00:00"})
    assert status == 422 and problem["errors"][0]["loc"] == ["ends_at"]  # no time zone: refused, not guessed
    status, current = await delegation("GET", "amy", "amy")
    assert status == 200 and current["delegation"] is None

    assert (await away("ron", "rita"))[0] == 200
    assert (await away("rita", "amy"))[0] == 200
    status, problem = await away("amy", "ron")  # amy -> ron -> rita -> amy
    assert status == 409 and problem["kind"] == "cycle" and "amy → ron → rita → amy" in problem["detail"]
    assert (await delegation("GET", "amy", "amy"))[1]["delegation"] is None
    # a cycle only counts while the periods overlap
    status, _ = await away("amy", "ron", starts_at=later(days=8), ends_at=later(days=9))
    assert status == 200


async def test_who_may_read_set_and_end_a_delegation(directory: InMemoryEventPublisher) -> None:
    assert (await away("amy", "ron", by="adam"))[0] == 200  # an admin sets it for her
    status, seen = await delegation("GET", "amy", "ron")  # the delegate reads it
    assert status == 200 and seen["delegation"]["set_by"] == "adam"
    status, seen = await delegation("GET", "ron", "ron")
    assert status == 200 and [d["delegator"] for d in seen["delegated_to_them"]] == ["amy"]
    assert (await delegation("GET", "amy", "ada"))[0] == 200  # auditors read
    assert (await delegation("GET", "amy", "erin"))[0] == 403
    assert (await delegation("DELETE", "amy", "ron"))[0] == 403  # the delegate may not end it
    assert (await delegation("DELETE", "amy", "ada"))[0] == 403  # nor an auditor
    status, ended = await delegation("DELETE", "amy", "amy")
    assert status == 200 and ended["delegation"] is None
    status, problem = await delegation("GET", "nobody-known", "adam")
    assert status == 422 and problem["kind"] == "unknown_person"
    assert (await delegation("GET", "bad/name", "adam"))[0] == 400


async def test_a_delegate_is_never_the_subject_and_acts_once_per_absent_voter(
        directory: InMemoryEventPublisher) -> None:
    _, view = await start_expense("d-2", amount=20000)
    manager = view["pending_requests"][0]["call_id"]
    assert (await away("amy", "erin"))[0] == 200  # erin is the expense's subject
    status, problem = await decide("d-2", manager, "erin")
    assert status == 403 and "subject" in problem["detail"]
    recipients = await get_runtime().service.notification_recipients(
        NotifiedRequest.model_validate(view["pending_requests"][0]))
    assert [(r.person_id, r.on_behalf_of) for r in recipients] == [("amy", None)]  # erin cannot act: amy keeps it
    assert (await decide("d-2", manager, "amy"))[0] == 200

    session = (await get_runtime().service.get_session("d-2")).model_dump(mode="json")
    finance = session["pending_requests"][0]["call_id"]
    assert (await away("fay", "ron"))[0] == 200
    status, body = await decide("d-2", finance, "ron")  # ron votes as fay's delegate
    assert status == 200, body
    vote = body["pending_requests"][0]["votes"][0]
    assert vote["voter"] == "fay" and vote["by"] == "ron"
    status, problem = await decide("d-2", finance, "fay")  # fay's vote is cast already
    assert status == 409 and problem["vote"]["by"] == "ron"
    status, problem = await respond_for("d-2", finance, "ron", "fay")
    assert status == 409
    status, problem = await respond_for("d-2", finance, "ron", "fred")  # fred did not delegate to him
    assert status == 403 and "does not act for" in problem["detail"]
    status, body = await decide("d-2", finance, "fred")
    assert status == 200 and body["status"] == "completed"
    voted = [(r.actor, r.detail.get("on_behalf_of")) for r in (await get_runtime().service.audit("d-2")).records
             if r.action == "voted"]
    assert voted == [("ron", "fay")]
