"""The reviewer app in a real browser (Debian's chromium through Playwright), as its people use it.

Under `make run`'s host with the demo directory: each person signs in on the dev sign-in page,
finds their work in the inbox, reads the request and answers through the form generated from its
response schema. Every page is scanned with axe-core (no serious or critical violation) under the
app's CSP (a violation would show in the console and fail the test); each scenario saves
screenshots under the run's artifacts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import AssertAccessible, PageFactory
from tests.browser.support import ConsoleGuard
from tests.e2e.host import LocalHost, running_host
from tests.e2e.test_links_e2e import link_for, session

Shot = Callable[[Page, str], Path]
README_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def sign_in(page: Page, host: LocalHost, name: str) -> None:
    """What a person does under `make run`: open the app, pick themselves on the dev sign-in page."""
    page.goto(f"http://127.0.0.1:{host.port}/api/app/inbox")
    expect(page).to_have_title(re.compile(r"^Sign in"))
    page.get_by_role("button", name=name).click()
    expect(page).to_have_title(re.compile(r"^My inbox"))
    expect(page.locator("header")).to_contain_text(f"Signed in as {name}")


def start_expense(host: LocalHost, session_id: str, amount: int, description: str = "Team offsite") -> None:
    with host.client("ed") as ed:
        started = ed.post("/api/workflows/expense-approval/sessions", json={
            "session_id": session_id, "input": {"employee": "erin", "amount": amount, "currency": "EUR",
                                                "description": description}})
        assert started.status_code == 201, started.text


def open_request(page: Page, session_id: str) -> None:
    page.locator(f"a[href*='/sessions/{session_id}/requests/']").first.click()
    expect(page.get_by_role("heading", name="Your answer")).to_be_visible()


def test_a_manager_approves_an_expense_and_finance_completes_the_quorum(
        host: LocalHost, new_page: PageFactory, assert_accessible: AssertAccessible, screenshot: Shot) -> None:
    start_expense(host, "x-1", 20000, "Team offsite in Lisbon, three days")
    with host.client("erin") as erin:  # someone else's request, which amy must not see
        assert erin.post("/api/workflows/content-review/sessions",
                         json={"session_id": "c-1", "input": {"draft": "Spring launch"}}).status_code == 201

    amy = new_page("amy", timezone_id="Europe/Berlin")
    amy.goto(f"http://127.0.0.1:{host.port}/api/app/inbox")
    assert_accessible(amy)  # the sign-in page
    amy.get_by_role("button", name="Amy Adams").click()
    expect(amy).to_have_title(re.compile(r"^My inbox"))
    rows = amy.locator("tbody tr")
    expect(rows).to_have_count(1)  # x-1 only: the content review is not hers
    expect(rows.first).to_contain_text("expense-approval")
    expect(rows.first).to_contain_text("Team offsite in Lisbon, three days · 20,000.00 EUR")
    expect(rows.first).to_contain_text("due in 2 days")
    shot = screenshot(amy, "inbox")
    assert_accessible(amy)

    open_request(amy, "x-1")
    data = amy.locator("dl.data")
    expect(data).to_contain_text("20,000.00 EUR")  # money with its currency, one line
    expect(data).not_to_contain_text("Currency")
    expect(amy.get_by_role("button", name="✓ Approve")).to_be_visible()
    expect(amy.get_by_role("button", name="✕ Reject")).to_be_visible()
    deadline = amy.locator("main time").nth(1).inner_text()  # rewritten into the reader's zone by the script
    assert "CET" in deadline or "GMT+1" in deadline, deadline
    form_shot = screenshot(amy, "decision-form")
    assert_accessible(amy)
    amy.get_by_label("Comment").fill("Within budget")
    amy.get_by_role("button", name="✓ Approve").click()
    expect(amy.locator("main")).to_contain_text("You approved this request at")
    assert_accessible(amy)

    for person, name in (("fay", "Fay Fischer"), ("fred", "Fred Fox")):
        page = new_page(person)
        sign_in(page, host, name)
        open_request(page, "x-1")
        expect(page.locator("main")).to_contain_text("Approvals needed: 2")
        page.get_by_role("button", name="✓ Approve").click()
        if person == "fay":
            expect(page.get_by_role("status")).to_contain_text("Your vote is recorded")
            expect(page.locator("main")).to_contain_text("so far 1")
            expect(page.locator("main")).to_contain_text("fay voted approve")
            screenshot(page, "quorum-progress")
            assert_accessible(page)
        else:
            expect(page.locator("main")).to_contain_text("You approved this request at")
    view = session(host, "x-1")
    assert view["status"] == "completed"
    assert view["outputs"][0]["decided_by"] == ["amy", "fay", "fred"]
    README_SHOTS.mkdir(parents=True, exist_ok=True)  # the README shows these two, refreshed by every run
    for source, name in ((shot, "inbox.png"), (form_shot, "decision-form.png")):
        (README_SHOTS / name).write_bytes(source.read_bytes())


def test_an_invalid_answer_shows_its_field_error_and_changes_nothing(
        host: LocalHost, new_page: PageFactory, assert_accessible: AssertAccessible, screenshot: Shot,
        console_guard: ConsoleGuard) -> None:
    console_guard.allow(r"status of 422")  # the page answers 422 on purpose
    start_expense(host, "x-2", 500)
    page = new_page("amy")
    sign_in(page, host, "Amy Adams")
    open_request(page, "x-2")
    comment = page.get_by_label("Comment")
    comment.evaluate("node => node.removeAttribute('maxlength')")  # as a hand-made request would
    comment.fill("x" * 5001)
    page.get_by_role("button", name="✕ Reject").click()
    expect(page.get_by_role("alert")).to_contain_text("Some answers need attention; nothing was recorded.")
    expect(page.locator("#e-comment")).to_contain_text("at most 5000 characters")
    expect(page.get_by_label("Comment")).to_have_attribute("aria-invalid", "true")
    screenshot(page, "field-error")
    assert_accessible(page)
    assert session(host, "x-2")["status"] == "pending"


def test_two_reviewers_at_once_the_second_sees_who_decided(
        host: LocalHost, new_page: PageFactory, assert_accessible: AssertAccessible, screenshot: Shot,
        console_guard: ConsoleGuard) -> None:
    console_guard.allow(r"status of 409")  # the late answer is a conflict, shown as a page
    with host.client("erin") as erin:
        assert erin.post("/api/workflows/content-review/sessions",
                         json={"session_id": "c-2", "input": {"draft": "Summer sale"}}).status_code == 201
    rita, ron = new_page("rita"), new_page("ron")
    sign_in(rita, host, "Rita Reyes")
    sign_in(ron, host, "Ron Rivera")
    open_request(rita, "c-2")
    open_request(ron, "c-2")
    rita.get_by_role("button", name="✓ Approve").click()
    expect(rita.locator("main")).to_contain_text("You approved this request at")
    ron.get_by_role("button", name="✕ Reject").click()  # his page is older than rita's decision
    expect(ron.locator("main")).to_contain_text("Already decided (approved) by Rita Reyes at")
    screenshot(ron, "already-decided")
    assert_accessible(ron)
    assert [d["decided_by"] for d in session(host, "c-2")["decisions"]] == ["rita"]


def test_a_delegate_acts_for_an_absent_manager(
        host: LocalHost, new_page: PageFactory, assert_accessible: AssertAccessible, screenshot: Shot) -> None:
    amy = new_page("amy")
    sign_in(amy, host, "Amy Adams")
    amy.get_by_role("link", name="Out of office").click()
    expect(amy).to_have_title(re.compile(r"^Out of office"))
    assert_accessible(amy)
    amy.get_by_label("Delegate (required)").select_option("ron")
    amy.get_by_label("For how many days (required)").fill("10")
    amy.get_by_label("Reason").fill("parental leave")
    amy.get_by_role("button", name="Save").click()
    expect(amy.get_by_role("status")).to_contain_text("Saved: ron decides for you for 10 day(s).")
    screenshot(amy, "delegation")

    start_expense(host, "x-3", 800)
    ron = new_page("ron")
    sign_in(ron, host, "Ron Rivera")
    expect(ron.get_by_role("status")).to_contain_text("also deciding for amy")
    open_request(ron, "x-3")
    expect(ron.locator("main")).to_contain_text("You decide for amy")
    ron.get_by_role("button", name="✓ Approve").click()
    expect(ron.locator("main")).to_contain_text("You approved this request for amy at")
    assert_accessible(ron)
    decision = session(host, "x-3")["decisions"][0]
    assert (decision["decided_by"], decision["on_behalf_of"]) == ("ron", "amy")

    amy.get_by_role("link", name="Out of office").click()
    amy.get_by_role("button", name="End it now").click()
    expect(amy.get_by_role("status")).to_contain_text("Your delegation has ended")


def test_history_shows_the_verified_audit(host: LocalHost, new_page: PageFactory,
                                          assert_accessible: AssertAccessible, screenshot: Shot) -> None:
    start_expense(host, "x-4", 300)
    with host.client("amy") as amy_api:
        call_id = session(host, "x-4")["pending_requests"][0]["call_id"]
        assert amy_api.post("/api/sessions/x-4/responses",
                            json={"call_id": call_id, "result": {"approved": True}}).status_code == 200
    page = new_page("amy")
    sign_in(page, host, "Amy Adams")
    page.get_by_role("link", name="History").click()
    expect(page.locator("tbody")).to_contain_text("decided")
    assert_accessible(page)
    page.get_by_role("link", name="x-4").click()
    expect(page.locator("main")).to_contain_text("audit chain verified")
    expect(page.locator("ol.audit")).to_contain_text("decided by amy")
    screenshot(page, "session-history")
    assert_accessible(page)


def test_an_expired_link_shows_a_clear_page(tmp_path: Path, new_page: PageFactory,
                                             assert_accessible: AssertAccessible, screenshot: Shot,
                                             console_guard: ConsoleGuard) -> None:
    console_guard.allow(r"status of 410")  # gone, on purpose
    with running_host(tmp_path / "data", HITL_LINK_TTL_SECONDS="1") as host:
        start_expense(host, "x-5", 300)
        link = link_for(host, "amy@example.com", "x-5")
        time.sleep(2.1)
        page = new_page("amy")
        response = page.goto(link)
        assert response is not None and response.status == 410
        expect(page.get_by_role("heading", level=1)).to_contain_text("expired")
        screenshot(page, "expired-link")
        assert_accessible(page)
        assert session(host, "x-5")["status"] == "pending"


def test_finance_approves_an_agents_refund_call_in_the_app(
        host: LocalHost, new_page: PageFactory, assert_accessible: AssertAccessible, screenshot: Shot) -> None:
    """refund-agent is an Agent Framework agent (a scripted chat client stands in for the model, which
    cannot be reached here): its refund tool call waits in finance's inbox, shown with its arguments;
    fred approves it with a reason, and the agent carries on and refunds."""
    with host.client("erin") as erin:
        started = erin.post("/api/workflows/refund-agent/sessions", json={
            "session_id": "r-1", "input": {"order": "A-1001", "amount": 250.0, "currency": "EUR",
                                           "reason": "parcel arrived broken"}})
        assert started.status_code == 201, started.text
    fred = new_page("fred")
    sign_in(fred, host, "Fred Fox")
    row = fred.locator("tbody tr").filter(has_text="refund-agent")
    expect(row).to_have_count(1)
    open_request(fred, "r-1")
    main = fred.locator("main")
    expect(main).to_contain_text("Approve a refund of 250.00 EUR for order A-1001?")
    expect(main).to_contain_text("parcel arrived broken")  # the call's arguments are shown
    expect(fred.get_by_role("button", name="✓ Approve")).to_be_visible()
    fred.get_by_label("Reason").fill("photo of the damage attached")
    screenshot(fred, "tool-approval")
    assert_accessible(fred)
    fred.get_by_role("button", name="✓ Approve").click()
    expect(main).to_contain_text("You approved this request at")
    assert_accessible(fred)
    view = session(host, "r-1")
    assert view["status"] == "completed"
    assert view["outputs"][0].startswith("Refunded 250.00 EUR for order A-1001"), view["outputs"]
    assert view["decisions"][0]["decided_by"] == "fred"
