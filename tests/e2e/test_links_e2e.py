"""Every request of every shipped workflow, decided through the e-mailed link alone, as its recipient.

Under `make run`'s host with the demo directory (devhost/demo-directory.json) on SQLite, Redis and
the Cosmos DB stand-in: the initiator starts over the API; each reviewer only opens the link in
their own e-mail (read from the local SMTP sink) and presses a button, as a person would; the
recorded decider is that recipient, ``via: link``, and the audit chain verifies.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
from typing import Any

import httpx
import pytest

from tests.e2e.host import LocalHost, running_host, wait_for
from tests.e2e.test_review_flow import backend_env

LINK = re.compile(r"(http://127\.0\.0\.1:\d+/api/decide\?token=[A-Za-z0-9_\-.]+)")


@pytest.fixture(params=["sqlite", "redis", "cosmos"])
def host(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    with running_host(tmp_path / "data", **backend_env(request, request.param)) as running:
        yield running


def inbox_of(host: LocalHost, address: str, session_id: str) -> list[dict[str, Any]]:
    return [m for m in host.mailbox()
            if address in m.get("to", []) and session_id in (m.get("text") or "")]


def pending_call_ids(host: LocalHost, session_id: str) -> set[str]:
    return {r["call_id"] for r in session(host, session_id)["pending_requests"]}


def token_call_id(link: str) -> str:
    payload = link.split("token=", 1)[1].split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["call_id"])


def link_for(host: LocalHost, address: str, session_id: str) -> str:
    """The decision link e-mailed to ``address`` for the session's request that is pending now."""
    def current() -> str | None:
        pending = pending_call_ids(host, session_id)
        for mail in reversed(inbox_of(host, address, session_id)):
            match = LINK.search(mail.get("text") or "")
            if match and token_call_id(match.group(1)) in pending:
                return match.group(1)
        return None

    return str(wait_for(current))


def press(link: str, decision: str, text: str = "") -> tuple[str, httpx.Response]:
    """What a person does: open the link (no identity of their own), read the page, press a button."""
    with httpx.Client(timeout=30) as browser:
        page = browser.get(link)
        assert page.status_code == 200, page.text
        match = re.search(r"Deciding as <b>([^<]+)</b>", page.text)
        assert match, page.text
        token = html.unescape(re.search(r"""name=["']token["'] value=["']([^"']+)["']""", page.text).group(1))  # type: ignore[union-attr]
        form = {"token": token, "decision": decision, **({"text": text} if text else {})}
        return html.unescape(match.group(1)), browser.post(link.split("?")[0], data=form)


def session(host: LocalHost, session_id: str) -> dict[str, Any]:
    with host.client("adam") as admin:  # the admins role reads everything
        return dict(admin.get(f"/api/sessions/{session_id}").json())


def audit(host: LocalHost, session_id: str) -> dict[str, Any]:
    with host.client("ada") as auditor:
        return dict(auditor.get(f"/api/sessions/{session_id}/audit", params={"verify": "true"}).json())


def test_every_shipped_request_is_decided_through_its_link_by_its_recipient(host: LocalHost) -> None:
    # expense-approval above the finance threshold: erin's manager (amy), then one of finance (fay, fred)
    with host.client("ed") as ed:
        started = ed.post("/api/workflows/expense-approval/sessions", json={
            "session_id": "x-1", "input": {"employee": "erin", "amount": 5000, "currency": "EUR",
                                           "description": "Conference in Lisbon"}})
        assert started.status_code == 201, started.text
    assert not inbox_of(host, "erin@example.com", "x-1")  # the subject is never asked
    label, done = press(link_for(host, "amy@example.com", "x-1"), "approve")
    assert label == "Amy Adams" and done.status_code == 200, done.text
    fred_link = link_for(host, "fred@example.com", "x-1")
    label, done = press(link_for(host, "fay@example.com", "x-1"), "approve", "within budget")
    assert label == "Fay Fischer" and done.status_code == 200, done.text
    with httpx.Client(timeout=30) as browser:  # fred's link, after fay decided: "already decided by Fay"
        late = browser.get(fred_link)
        assert late.status_code == 410 and "already decided by Fay Fischer" in late.text
    view = session(host, "x-1")
    assert view["status"] == "completed"
    assert view["outputs"] == [{"status": "approved", "amount": 5000.0, "decided_by": ["amy", "fay"]}]

    # content-review without named reviewers: the reviewers role (rita, ron); ron rejects, rita approves
    with host.client("erin") as erin:
        assert erin.post("/api/workflows/content-review/sessions",
                         json={"session_id": "c-1", "input": {"draft": "Spring launch"}}).status_code == 201
    label, done = press(link_for(host, "ron@example.com", "c-1"), "reject", "add the date")
    assert label == "Ron Rivera" and done.status_code == 200
    label, done = press(link_for(host, "rita@example.com", "c-1"), "approve")  # the revised draft
    assert label == "Rita Reyes" and done.status_code == 200
    assert session(host, "c-1")["outputs"] == [{"published": "Spring launch\n[revised: add the date]"}]

    # content-review naming its reviewers by e-mail and by id (the case that used to answer 403)
    with host.client("erin") as erin:
        assert erin.post("/api/workflows/content-review/sessions", json={
            "session_id": "c-2", "input": {"draft": "Hello", "reviewers": ["rita@example.com", "ron"]}}
        ).status_code == 201
    label, done = press(link_for(host, "rita@example.com", "c-2"), "approve")
    assert label == "Rita Reyes" and done.status_code == 200, done.text

    # expense-approval above 10,000: two distinct members of finance must approve (a quorum of votes)
    with host.client("ed") as ed:
        assert ed.post("/api/workflows/expense-approval/sessions", json={
            "session_id": "x-2", "input": {"employee": "erin", "amount": 20000, "currency": "EUR",
                                           "description": "Team offsite"}}).status_code == 201
    label, done = press(link_for(host, "amy@example.com", "x-2"), "approve")
    assert label == "Amy Adams" and done.status_code == 200
    fay_link, fred_link = link_for(host, "fay@example.com", "x-2"), link_for(host, "fred@example.com", "x-2")
    label, done = press(fay_link, "approve")
    assert done.status_code == 200 and "Your vote is recorded: 1 approval(s) of 2" in done.text
    assert session(host, "x-2")["status"] == "pending"
    with httpx.Client(timeout=30) as browser:
        page = browser.get(fred_link)
        assert "Approvals needed: <b>2</b>; so far 1 (fay voted)" in page.text
    label, done = press(fred_link, "approve")
    assert label == "Fred Fox" and done.status_code == 200 and "The workflow has continued" in done.text
    assert session(host, "x-2")["outputs"] == [{"status": "approved", "amount": 20000.0,
                                                "decided_by": ["amy", "fay", "fred"]}]
    voted = [r for r in audit(host, "x-2")["records"] if r["action"] in ("voted", "decided")]
    assert [(r["action"], r["actor"]) for r in voted] == [("decided", "amy"), ("voted", "fay"), ("decided", "fred")]

    for session_id, deciders in (("x-1", ["amy", "fay"]), ("c-1", ["ron", "rita"]), ("c-2", ["rita"])):
        records = audit(host, session_id)
        assert records["verification"]["valid"] is True
        decided = [r for r in records["records"] if r["action"] == "decided"]
        assert [r["actor"] for r in decided] == deciders
        assert all(r["detail"]["via"] == "link" for r in decided)
        assert all(r["source"] == "127.0.0.1" for r in records["records"] if r["action"] in ("started", "decided"))
        assert [d["decided_by"] for d in session(host, session_id)["decisions"]] == deciders


def in_days(days: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()


def test_contract_signoff_by_every_legal_reviewer_one_through_a_delegate(host: LocalHost) -> None:
    """leo is on leave and has handed his approvals to ron: ron gets leo's e-mail and votes for him."""
    with host.client("leo") as leo:
        set_ = leo.put("/api/delegations/leo", json={"delegate": "ron@example.com",
                                                     "ends_at": in_days(30), "reason": "parental leave"})
        assert set_.status_code == 200 and set_.json()["delegate"] == "ron", set_.text
    with host.client("mona") as mona:
        started = mona.post("/api/workflows/contract-signoff/sessions", json={
            "session_id": "k-1", "input": {"title": "Cloud hosting 2027", "counterparty": "Nimbus GmbH",
                                           "value": 120000, "currency": "EUR", "summary": "Three-year term.",
                                           "legal_reviewers": ["lena", "leo@example.com"]}})
        assert started.status_code == 201, started.text
        assert started.json()["pending_requests"][0]["approvers"] == ["user:lena", "user:leo"]
    label, done = press(link_for(host, "lena@example.com", "k-1"), "approve", "fine by me")
    assert label == "Lena Lang" and "Your vote is recorded" in done.text
    assert not inbox_of(host, "leo@example.com", "k-1")  # away: his delegate is asked instead
    (mail,) = inbox_of(host, "ron@example.com", "k-1")
    assert "You receive this for leo, who is away and delegated their approvals to you" in mail["text"]
    label, done = press(link_for(host, "ron@example.com", "k-1"), "approve")
    assert label == "Ron Rivera for Leo Lind" and "The workflow has continued" in done.text, done.text
    view = session(host, "k-1")
    assert view["outputs"] == [{"status": "signed-off", "title": "Cloud hosting 2027", "votes": [
        {"voter": "lena", "approved": True, "comment": "fine by me"},
        {"voter": "leo", "by": "ron", "approved": True, "comment": ""}]}]
    assert view["decisions"][0]["decided_by"] == "ron" and view["decisions"][0]["on_behalf_of"] == "leo"
    records = audit(host, "k-1")
    assert records["verification"]["valid"] is True
    acts = [(r["action"], r["actor"], r["detail"].get("on_behalf_of")) for r in records["records"]
            if r["action"] in ("voted", "decided")]
    assert acts == [("voted", "lena", None), ("decided", "ron", "leo")]

    # a second contract: lena vetoes through her link; it ends at once, leo's delegate never needs to act
    with host.client("mona") as mona:
        assert mona.post("/api/workflows/contract-signoff/sessions", json={
            "session_id": "k-2", "input": {"title": "Office lease", "counterparty": "Acme", "value": 50000,
                                           "currency": "EUR", "summary": "Ten years.",
                                           "legal_reviewers": ["lena", "leo"]}}).status_code == 201
    ron_link = link_for(host, "ron@example.com", "k-2")
    label, done = press(link_for(host, "lena@example.com", "k-2"), "reject", "ten years is too long")
    assert "The workflow has continued" in done.text
    assert session(host, "k-2")["outputs"] == [{"status": "rejected", "title": "Office lease", "votes": [
        {"voter": "lena", "approved": False, "comment": "ten years is too long"}]}]
    with httpx.Client(timeout=30) as browser:
        assert browser.get(ron_link).status_code == 410


def test_refund_agent_tool_calls_are_approved_through_links_by_the_right_people(host: LocalHost) -> None:
    """refund-agent (an Agent Framework agent; a scripted chat client stands in for the model, which
    cannot be reached here): its ``refund`` tool call pauses the agent until a person decides. Above
    100 finance decides, at or below it the reviewers role; a rejection's reason reaches the agent."""
    with host.client("erin") as erin:
        started = erin.post("/api/workflows/refund-agent/sessions", json={
            "session_id": "r-1", "input": {"order": "A-1001", "amount": 250.0, "currency": "EUR",
                                           "reason": "parcel arrived broken"}})
        assert started.status_code == 201, started.text
        (request,) = started.json()["pending_requests"]
    assert request["approvers"] == ["role:finance"]
    assert request["data"]["question"] == "Approve a refund of 250.00 EUR for order A-1001?"
    assert request["data"]["details"] == {"tool": "refund", "arguments": {
        "order": "A-1001", "amount": 250.0, "currency": "EUR", "reason": "parcel arrived broken"}}
    assert set(request["response_schema"]["properties"]) == {"approved", "reason"}
    assert not inbox_of(host, "rita@example.com", "r-1")  # above 100: finance only
    label, done = press(link_for(host, "fay@example.com", "r-1"), "reject", "no photo of the damage")
    assert label == "Fay Fischer" and done.status_code == 200, done.text
    view = session(host, "r-1")
    assert view["status"] == "completed"
    assert view["outputs"] == ["The refund of 250.00 EUR for order A-1001 was not approved: no photo of the damage."]

    with host.client("erin") as erin:
        assert erin.post("/api/workflows/refund-agent/sessions", json={
            "session_id": "r-2", "input": {"order": "B-7", "amount": 40.0, "currency": "EUR",
                                           "reason": "wrong size"}}).status_code == 201
    label, done = press(link_for(host, "ron@example.com", "r-2"), "approve")
    assert label == "Ron Rivera" and done.status_code == 200, done.text
    (answer,) = session(host, "r-2")["outputs"]
    assert answer.startswith("Refunded 40.00 EUR for order B-7 (refund R-"), answer
    for session_id, decider in (("r-1", "fay"), ("r-2", "ron")):
        records = audit(host, session_id)
        assert records["verification"]["valid"] is True
        (decided,) = [r for r in records["records"] if r["action"] == "decided"]
        assert decided["actor"] == decider and decided["detail"]["via"] == "link"
