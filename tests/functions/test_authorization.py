"""Every act by a known person who may do it: one test per route and role, with the demo directory.

The people (devhost/demo-directory.json): ed starts an expense for erin (the subject); erin's
manager amy approves it; fay and fred are finance; ron is uninvolved; ada is an auditor; adam an
admin; zed is not in the directory. Refused acts are audited under the actor's directory id.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime, reset_runtime

from .conftest import app_runtime, call, http

ROOT = Path(__file__).resolve().parents[2]
EXPENSE = {"employee": "erin@example.com", "amount": 5000, "currency": "EUR", "description": "Conference"}


def who(user: str | None) -> dict[str, str]:
    """The dev header of ``user`` (roles come from the directory: the header cannot grant any)."""
    return {"x-hitl-user": user or "", "x-hitl-roles": "admins" if user == "zed" else ""}


@pytest.fixture
async def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InMemoryEventPublisher]:
    """The service with the demo directory: roles come from it, not from headers."""
    async for publisher in app_runtime(tmp_path, monkeypatch, HITL_DIRECTORY="file",
                                       HITL_DIRECTORY_FILE=str(ROOT / "devhost" / "demo-directory.json")):
        yield publisher


async def start_expense(session_id: str, by: str | None = "ed", **extra: Any) -> tuple[int, Any]:
    status, data, _ = await call("start_session", http(
        "POST", "/api/workflows/expense-approval/sessions",
        body={"session_id": session_id, "input": {**EXPENSE, **extra}},
        route={"workflow": "expense-approval"}, headers=who(by)))
    return status, data


async def decide(session_id: str, call_id: str, by: str | None, approved: bool = True) -> tuple[int, Any]:
    status, data, _ = await call("post_response", http(
        "POST", f"/api/sessions/{session_id}/responses", route={"session_id": session_id},
        body={"call_id": call_id, "result": {"approved": approved}}, headers=who(by)))
    return status, data


async def audit_actions(session_id: str) -> list[tuple[str, str | None]]:
    view = await get_runtime().service.audit(session_id)
    return [(r.action, r.actor) for r in view.records]


async def test_the_manager_comes_from_the_directory_not_from_the_initiator(directory: InMemoryEventPublisher) -> None:
    status, view = await start_expense("e-1")
    assert status == 201, view
    (request,) = view["pending_requests"]
    assert request["approvers"] == ["user:amy"] and request["subject"] == "erin"
    status, problem = await start_expense("e-2", manager="ed")  # the initiator cannot pick an accomplice
    assert status == 422 and "manager" in json.dumps(problem["errors"])
    status, problem = await start_expense("e-3", employee="nobody@example.com")
    assert status == 422 and "not in the directory" in json.dumps(problem["errors"])


READ_MATRIX = {"ed": 200, "erin": 200, "amy": 200, "ada": 200, "adam": 200, "ron": 404, "fay": 404,
               "zed": 404, None: 404}


@pytest.mark.parametrize("route", ["get_session", "get_audit"])
async def test_who_may_read_a_session_and_its_audit(directory: InMemoryEventPublisher, route: str) -> None:
    await start_expense("r-1")
    for user, expected in READ_MATRIX.items():
        status, body, _ = await call(route, http("GET", "/api/sessions/r-1", route={"session_id": "r-1"},
                                                 headers=who(user)))
        assert status == expected, (user, body)
        if expected == 404:
            assert body["title"] == "Session not found"  # the same answer as for an id that does not exist


async def test_who_may_decide(directory: InMemoryEventPublisher) -> None:
    _, view = await start_expense("d-1")
    call_id = view["pending_requests"][0]["call_id"]
    expected = {"erin": 403, "ed": 403, "ada": 403, "adam": 403, "fay": 404, "ron": 404, "zed": 404, None: 404}
    for user, status_expected in expected.items():
        status, body = await decide("d-1", call_id, user)
        assert status == status_expected, (user, body)
    status, body = await decide("d-1", call_id, "AMY@example.com")  # the same person, spelled otherwise
    assert status == 200 and body["pending_requests"][0]["approvers"] == ["role:finance"]
    actions = await audit_actions("d-1")
    refused = [actor for action, actor in actions if action == "refused"]
    assert refused == ["erin", "ed", "ada", "adam", "fay", "ron", "zed", None]  # each by their directory id
    assert ("decided", "amy") in actions
    # now the finance role decides: fay and fred may; the subject and the initiator still may not
    finance_call = body["pending_requests"][0]["call_id"]
    assert (await decide("d-1", finance_call, "erin"))[0] == 403
    status, body = await decide("d-1", finance_call, "fay")
    assert status == 200 and body["status"] == "completed"
    assert body["outputs"] == [{"status": "approved", "amount": 5000.0, "decided_by": ["amy", "fay"]}]


async def test_the_inbox_lists_what_the_caller_may_decide(directory: InMemoryEventPublisher) -> None:
    await start_expense("i-1")

    async def inbox(user: str | None, **params: str) -> tuple[int, Any]:
        status, body, _ = await call("list_requests", http("GET", "/api/requests", params=params, headers=who(user)))
        return status, body

    assert [i["session_id"] for i in (await inbox("amy"))[1]["items"]] == ["i-1"]
    for user in ("fay", "ron", "erin", "zed", None):
        status, body = await inbox(user)
        assert status == 200 and body["items"] == [], user
    for user in ("ada", "adam"):
        status, body = await inbox(user, scope="all")
        assert status == 200 and [i["session_id"] for i in body["items"]] == ["i-1"]
    for user in ("amy", "ron", "zed"):
        assert (await inbox(user, scope="all"))[0] == 403
        assert (await inbox(user, assignee="user:amy"))[0] == 403


async def test_who_may_cancel(directory: InMemoryEventPublisher) -> None:
    for session_id in ("c-1", "c-2"):
        await start_expense(session_id)
    expected = {None: 404, "zed": 404, "ron": 404, "amy": 403, "erin": 403, "ada": 403}
    for user, status_expected in expected.items():
        status, body, _ = await call("cancel_session", http("POST", "/api/sessions/c-1/cancel",
                                                            route={"session_id": "c-1"}, headers=who(user)))
        assert status == status_expected, (user, body)
    assert (await get_runtime().service.get_session("c-1")).status == "pending"
    status, body, _ = await call("cancel_session", http("POST", "/", route={"session_id": "c-1"}, headers=who("ed")))
    assert status == 200 and body["status"] == "cancelled"
    status, body, _ = await call("cancel_session", http("POST", "/", route={"session_id": "c-2"},
                                                        headers=who("adam")))
    assert status == 200 and body["status"] == "cancelled"
    refused = [actor for action, actor in await audit_actions("c-1") if action == "refused"]
    assert refused == [None, "zed", "ron", "amy", "erin", "ada"]


async def test_a_user_named_like_a_role_is_not_the_role(runtime: InMemoryEventPublisher) -> None:
    """No directory here: roles come from the dev header; a user *named* finance has no role."""
    from hitl_core import Approvers

    assert Approvers(roles=["finance"]) != Approvers(users=["finance"])
    status, view, _ = await call("start_session", http(
        "POST", "/", body={"session_id": "role", "input": {"draft": "x", "reviewers": ["role:finance"]}},
        route={"workflow": "content-review"}))
    assert status == 201 and view["pending_requests"][0]["approvers"] == ["role:finance"]
    call_id = view["pending_requests"][0]["call_id"]
    body = {"call_id": call_id, "result": {"approved": True}}
    status, _, _ = await call("post_response", http("POST", "/", body=body, route={"session_id": "role"},
                                                    headers={"x-hitl-user": "finance", "x-hitl-roles": ""}))
    assert status in (403, 404)
    status, _, _ = await call("post_response", http("POST", "/", body=body, route={"session_id": "role"},
                                                    headers={"x-hitl-user": "fay", "x-hitl-roles": "finance"}))
    assert status == 200


def principal(**claims: str) -> str:
    body = {"auth_typ": "aad", "claims": [{"typ": k, "val": v} for k, v in claims.items()]}
    return base64.b64encode(json.dumps(body).encode()).decode()


async def test_under_easyauth_a_start_needs_a_person_or_a_listed_service_principal(
        directory: InMemoryEventPublisher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_AUTH_MODE", "easyauth")
    monkeypatch.setenv("HITL_START_PRINCIPALS", "11111111-2222-3333-4444-555555555555")
    reset_runtime()

    async def start_as(headers: dict[str, str], session_id: str) -> int:
        status, _, _ = await call("start_session", http(
            "POST", "/", body={"session_id": session_id, "input": EXPENSE}, route={"workflow": "expense-approval"},
            headers={"x-hitl-user": "", "x-hitl-roles": "", **headers}))
        return int(status)

    assert await start_as({}, "ea-1") == 403
    assert await start_as({"x-hitl-user": "ed"}, "ea-2") == 403  # the dev header means nothing here
    assert await start_as({"x-ms-client-principal": principal(appid="99999999-0000-0000-0000-000000000000")},
                          "ea-3") == 403
    assert await start_as({"x-ms-client-principal": principal(appid="11111111-2222-3333-4444-555555555555")},
                          "ea-4") == 201
    assert await start_as({"x-ms-client-principal": principal(preferred_username="ed@example.com")}, "ea-5") == 201
    view = await get_runtime().service.get_session("ea-5")
    assert view.pending_requests[0].approvers == ["user:amy"]
    assert (await audit_actions("ea-5"))[0] == ("started", "ed")
    assert (await audit_actions("ea-4"))[0] == ("started", "app:11111111-2222-3333-4444-555555555555")
