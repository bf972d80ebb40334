"""The reviewer app's pages refuse bad input with a readable page and change nothing (no 5xx).

Called through the app's own functions (the browser tests walk the real host)."""

from __future__ import annotations

import datetime as dt
import html
import re
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hitl_core.checkpoint.models import utcnow
from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime
from tests.functions.conftest import call, http
from tests.functions.test_authorization import decide as decide_as
from tests.functions.test_authorization import start_expense
from tests.functions.test_claims import claim, runtime_with


@pytest.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InMemoryEventPublisher]:
    async for publisher in runtime_with(tmp_path, monkeypatch, HITL_LINK_SIGNING_KEYS="k" * 32):
        yield publisher


def as_(user: str, **headers: str) -> dict[str, str]:
    return {"x-hitl-user": "", "x-hitl-roles": "", "cookie": f"hitl_dev_user={user}", **headers}


async def test_signed_out_people_are_sent_to_sign_in_and_never_elsewhere(app: InMemoryEventPublisher) -> None:
    status, _, response = await call("app_inbox", http("GET", "http://h/api/app/inbox",
                                                       headers={"x-hitl-user": "", "x-hitl-roles": ""}))
    assert status == 303 and response.headers["Location"].startswith("/api/app/signin?next=")
    status, _, response = await call("app_signin", http(
        "POST", "http://h/api/app/signin", raw=b"user=amy&next=https%3A%2F%2Fevil.example%2F",
        headers={"content-type": "application/x-www-form-urlencoded"}))
    assert status == 303 and response.headers["Location"] == "/api/app/inbox"  # no open redirect
    assert "HttpOnly" in response.headers["Set-Cookie"] and "SameSite=Strict" in response.headers["Set-Cookie"]
    status, page, _ = await call("app_signin", http("POST", "http://h/api/app/signin", raw=b"user=nobody-known",
                                                    headers={"content-type": "application/x-www-form-urlencoded"}))
    assert status == 422 and "Choose one of the people listed" in str(page)


async def test_a_form_without_its_token_or_with_broken_bytes_decides_nothing(app: InMemoryEventPublisher) -> None:
    _, view = await start_expense("w-1")
    call_id = view["pending_requests"][0]["call_id"]
    url = f"http://h/api/app/sessions/w-1/requests/{call_id}"
    route = {"session_id": "w-1", "call_id": call_id}
    for body in (b"__decision=true", b"__decision=true&csrf=forged", b"\xff\xfe__decision=true"):
        status, page, response = await call("app_request", http("POST", url, raw=body, route=route, headers=as_(
            "amy", **{"content-type": "application/x-www-form-urlencoded"})))
        assert status in (400, 403), (body, status)
        assert response.mimetype == "text/html" and "<h1>" in str(page)
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert (await get_runtime().service.get_session("w-1")).status == "pending"
    assert not [r for r in (await get_runtime().service.audit("w-1")).records if r.action == "decided"]


@pytest.mark.parametrize(("session_id", "call_id"), [("nope", "x"), ("w-2", "not-a-call"), ("bad id!", "x"),
                                                     ("w-2", "\u0000")])
async def test_unknown_or_malformed_ids_are_a_not_found_page(app: InMemoryEventPublisher, session_id: str,
                                                             call_id: str) -> None:
    await start_expense("w-2")
    status, page, _ = await call("app_request", http("GET", "http://h/api/app/x", headers=as_("amy"),
                                                     route={"session_id": session_id, "call_id": call_id}))
    assert status == 404 and "Not found" in str(page)


async def test_someone_elses_request_is_not_found_and_odd_cookies_are_ignored(app: InMemoryEventPublisher) -> None:
    _, view = await start_expense("w-3")
    route = {"session_id": "w-3", "call_id": view["pending_requests"][0]["call_id"]}
    status, _, _ = await call("app_request", http("GET", "http://h/x", headers=as_("ron"), route=route))
    assert status == 404  # ron is not involved: as if the session did not exist
    for cookie in ('hitl_dev_user="unterminated', "hitl_dev_user=" + "a" * 5000, "=;=;;"):
        status, _, _ = await call("app_inbox", http("GET", "http://h/api/app/inbox", headers={
            "x-hitl-user": "", "x-hitl-roles": "", "cookie": cookie}))
        assert status in (200, 303), (cookie, status)


async def test_under_easy_auth_the_app_signs_in_through_app_service(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.functions.test_identity import principal

    async for _ in runtime_with(tmp_path, monkeypatch, HITL_AUTH_MODE="easyauth", HITL_LINK_SIGNING_KEYS="k" * 32):
        anonymous = {"x-hitl-user": "", "x-hitl-roles": "", "cookie": "hitl_dev_user=amy"}  # the dev cookie: ignored
        status, _, response = await call("app_inbox", http("GET", "http://h/api/app/inbox", headers=anonymous))
        assert status == 303 and response.headers["Location"].startswith("/.auth/login/aad?post_login_redirect_uri=")
        status, _, response = await call("app_signin", http("GET", "http://h/api/app/signin", headers=anonymous))
        assert status == 303 and response.headers["Location"].startswith("/.auth/login/aad")
        signed_in = {**anonymous, "x-ms-client-principal": principal("amy@example.com", [])}
        status, page, _ = await call("app_inbox", http("GET", "http://h/api/app/inbox", headers=signed_in))
        assert status == 200 and "Signed in as <b>Amy Adams</b>" in str(page)
        assert "Sign out" not in str(page)  # App Service owns the session (/.auth/logout)


async def _inbox(params: dict[str, str], user: str = "amy") -> tuple[str, list[str], dict[str, str] | None]:
    """The inbox page as ``user`` sees it: its text, the sessions it lists, the next page's query."""
    status, page, _ = await call("app_inbox", http("GET", "http://h/api/app/inbox", params=params, headers=as_(user)))
    assert status == 200
    nxt = re.search(r'href="/api/app/inbox\?([^"]+)">Next page', str(page))
    query = dict(urllib.parse.parse_qsl(html.unescape(nxt.group(1)))) if nxt else None
    return str(page), re.findall(r"/sessions/(s-\d)/requests/", str(page)), query


async def _walk(params: dict[str, str], user: str = "amy") -> tuple[list[list[str]], str]:
    """Every page of a filtered inbox, by following its "Next page" links; and the first page's text."""
    pages: list[list[str]] = []
    first = ""
    query: dict[str, str] | None = params
    while query is not None:
        text, sessions, query = await _inbox(query, user)
        first = first or text
        pages.append(sessions)
    return pages, first


async def test_due_soon_and_claimed_by_me_are_whole_pages_with_exact_counts(
        app: InMemoryEventPublisher, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both filters are the storage's (the deadline order's front, the claim index), so every page is
    full however far apart the matches are, and the counts beside the filters are exact."""
    import hitl_core.functions.webapp as webapp

    monkeypatch.setattr(webapp, "PAGE_SIZE", 2)
    for n in range(7):
        await start_expense(f"s-{n}")
    service = get_runtime().service
    for n in (1, 4, 6):  # three requests become due within the hour (as an escalation would make them)
        stored = await service.storage.load(f"s-{n}")
        assert stored is not None
        stored.checkpoint.pending_requests[0].deadline = utcnow() + dt.timedelta(minutes=30 + n)
        await service.storage.save(stored.checkpoint, expected_version=stored.version)
    call_ids = {}
    for n in (0, 3, 5):  # amy claims three others, spread over the inbox
        view = await service.get_session(f"s-{n}")
        call_ids[n] = view.pending_requests[0].call_id
        status, _ = await claim(f"s-{n}", call_ids[n], "amy")
        assert status == 200

    pages, first = await _walk({"due": "soon"})
    assert pages == [["s-1", "s-4"], ["s-6"]]
    assert "3 requests match these filters (of 7 waiting for you); 2 on this page" in html.unescape(first)
    assert "Due within a day (3)" in first and "Claimed by me (3)" in first

    pages, first = await _walk({"claimed": "me"})
    assert sorted(s for p in pages for s in p) == ["s-0", "s-3", "s-5"] and [len(p) for p in pages] == [2, 1]
    pages, _ = await _walk({"claimed": "me", "due": "soon"})
    assert pages == [[]]

    await claim("s-3", call_ids[3], "amy", release=True)  # a release leaves the filter and the count at once
    pages, first = await _walk({"claimed": "me"})
    assert sorted(s for p in pages for s in p) == ["s-0", "s-5"] and "Claimed by me (2)" in first
    text, sessions, _ = await _inbox({"claimed": "me"}, user="mona")  # someone else's claims are not mine
    assert sessions == [] and "Claimed by me (0)" in text


async def test_history_walks_the_persons_own_index_page_by_page(app: InMemoryEventPublisher,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """History lists what a person started or decided, from the storage's per-person index, paged; a
    session they had no part in never shows, however many there are."""
    import hitl_core.functions.webapp as webapp

    monkeypatch.setattr(webapp, "PAGE_SIZE", 2)
    for n in range(5):
        status, _ = await start_expense(f"s-{n}", by="ed" if n != 2 else "fay")
        assert status == 201
    service = get_runtime().service
    view = await service.get_session("s-1")
    status, _ = await decide_as("s-1", view.pending_requests[0].call_id, "amy")
    assert status == 200

    async def walk(user: str) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        params: dict[str, str] | None = {}
        while params is not None:
            status, page, _ = await call("app_history", http("GET", "http://h/api/app/history", params=params,
                                                             headers=as_(user)))
            assert status == 200
            text = html.unescape(str(page))
            rows += re.findall(r'/sessions/(s-\d)">s-\d</a></td><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td>', text)
            nxt = re.search(r'href="/api/app/history\?([^"]+)">Next page', str(page))
            params = dict(urllib.parse.parse_qsl(html.unescape(nxt.group(1)))) if nxt else None
        return rows

    assert await walk("ed") == [(f"s-{n}", "started it") for n in (0, 1, 3, 4)]
    assert await walk("amy") == [("s-1", "decided")]
    assert await walk("fay") == [("s-2", "started it")]
    assert await walk("ron") == []
    status, page, _ = await call("app_history", http("GET", "http://h/api/app/history",
                                                     params={"continuation": "not-a-token"}, headers=as_("ed")))
    assert status == 200 and "s-0" in str(page)  # a token this storage never issued starts again
