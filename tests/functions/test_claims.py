"""Claiming a request: who may, what it blocks, how it ends (released, lapsed), all audited.

With the demo directory: ed files a 20,000 EUR expense for erin; amy (her manager) approves; then
two of finance (fay, fred) must approve. fay claims the finance request to look into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime

from .conftest import app_runtime, call, http
from .test_authorization import ROOT, decide, start_expense, who


async def runtime_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       **env: str) -> AsyncIterator[InMemoryEventPublisher]:
    async for publisher in app_runtime(tmp_path, monkeypatch, HITL_DIRECTORY="file",
                                       HITL_DIRECTORY_FILE=str(ROOT / "devhost" / "demo-directory.json"), **env):
        yield publisher


@pytest.fixture
async def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InMemoryEventPublisher]:
    async for publisher in runtime_with(tmp_path, monkeypatch):
        yield publisher


async def finance_request(session_id: str) -> str:
    _, view = await start_expense(session_id, amount=20000)
    status, view = await decide(session_id, view["pending_requests"][0]["call_id"], "amy")
    assert status == 200, view
    return str(view["pending_requests"][0]["call_id"])


async def claim(session_id: str, call_id: str, user: str | None, *, release: bool = False) -> tuple[int, Any]:
    name = "release_request" if release else "claim_request"
    status, body, _ = await call(name, http("POST", f"/api/sessions/{session_id}/requests/{call_id}/claim",
                                            route={"session_id": session_id, "call_id": call_id},
                                            headers=who(user)))
    return status, body


async def test_a_claim_holds_off_others_until_released(directory: InMemoryEventPublisher) -> None:
    call_id = await finance_request("k-1")
    status, request = await claim("k-1", call_id, "fay")
    assert status == 200 and request["claimed_by"] == "fay" and request["claimed_until"]
    status, problem = await decide("k-1", call_id, "fred")
    assert status == 409 and problem["title"] == "Request claimed" and problem["claimed_by"] == "fay"
    assert (await claim("k-1", call_id, "fred"))[0] == 409
    assert (await claim("k-1", call_id, "ron"))[0] == 404  # not involved: no such session for him
    assert (await claim("k-1", call_id, "erin"))[0] == 403  # the subject may not decide, so may not claim
    assert (await claim("k-1", call_id, "fred", release=True))[0] == 403  # not his claim
    status, body = await decide("k-1", call_id, "fay")  # the claimer votes; the quorum needs one more
    assert status == 200 and body["pending_requests"][0]["votes"][0]["voter"] == "fay"
    status, request = await claim("k-1", call_id, "fay", release=True)
    assert status == 200 and request["claimed_by"] is None
    status, body = await decide("k-1", call_id, "fred")
    assert status == 200 and body["status"] == "completed"
    audit = await get_runtime().service.audit("k-1")
    acts = [(r.action, r.actor) for r in audit.records if r.action in ("claimed", "released", "refused", "voted")]
    assert acts == [("claimed", "fay"), ("refused", "ron"), ("refused", "erin"), ("refused", "fred"),
                    ("voted", "fay"), ("released", "fay")]
    await get_runtime().service.drain()
    claims = [e["data"]["action"] for e in directory.events if e["type"] == "hitl.request.claimed"]
    assert claims == ["claimed", "released"]


async def test_an_admin_releases_and_a_claim_lapses_by_itself(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async for _ in runtime_with(tmp_path, monkeypatch, HITL_CLAIM_SECONDS="1"):
        call_id = await finance_request("k-2")
        assert (await claim("k-2", call_id, "fay"))[0] == 200
        status, request = await claim("k-2", call_id, "adam", release=True)
        assert status == 200 and request["claimed_by"] is None
        assert (await claim("k-2", call_id, "fred"))[0] == 200
        assert (await decide("k-2", call_id, "fay"))[0] == 409
        await asyncio.sleep(1.2)  # HITL_CLAIM_SECONDS=1: fred's claim lapses by itself
        status, body = await decide("k-2", call_id, "fay")
        assert status == 200 and body["pending_requests"][0]["claimed_by"] is None


async def inbox(user: str | None, **params: str) -> tuple[int, Any]:
    status, body, _ = await call("list_requests", http("GET", "/api/requests", params=params, headers=who(user)))
    return status, body


async def test_the_api_inbox_filters_by_my_claims_and_deadline_and_counts(directory: InMemoryEventPublisher) -> None:
    """``claimed=me``, ``due_before`` and ``count=true`` on GET /api/requests; malformed values are a 400
    that names the parameter."""
    calls = [await finance_request(f"c-{n}") for n in range(3)]
    assert (await claim("c-1", calls[1], "fay"))[0] == 200
    status, page = await inbox("fay", claimed="me", count="true")
    assert status == 200 and [i["session_id"] for i in page["items"]] == ["c-1"] and page["total"] == 1
    status, page = await inbox("fred", claimed="me", count="true")
    assert status == 200 and page["items"] == [] and page["total"] == 0
    status, page = await inbox("fred", count="true", limit="1")
    assert status == 200 and len(page["items"]) == 1 and page["total"] == 3 and page["continuation"]
    status, page = await inbox("fred")
    assert status == 200 and page["total"] is None  # counting is asked for, never paid for by default
    deadline = page["items"][0]["deadline"]
    assert deadline is not None
    status, page = await inbox("fred", due_before=deadline, count="true")
    assert status == 200 and page["total"] == 0  # strictly before
    status, page = await inbox("fred", due_before="9999-12-31T23:59:59Z", count="true")
    assert status == 200 and page["total"] == 3
    for params, name in (({"claimed": "you"}, "claimed"), ({"due_before": "2026-12-01T09:00:00"}, "due_before"),
                         ({"due_before": "0001-01-01T00:00:00+14:00"}, "due_before"),
                         ({"due_before": "tomorrow"}, "due_before"), ({"count": "yes"}, "count")):
        status, problem = await inbox("fred", **params)
        assert status == 400 and name in problem["detail"], (params, problem)
