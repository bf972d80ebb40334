"""render_notification: what a reviewer reads, and that nothing they did not write is executable."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from hitl_core.notify import (
    CloudEvent,
    InvalidEventError,
    describe_response_schema,
    recipients_for,
    relative_time,
    render_notification,
)
from hitl_core.settings import Settings

from .conftest import BASE, make_event

NOW = BASE


def test_created_subject_and_text_carry_summary_deadline_link_and_answer() -> None:
    note = render_notification(make_event(), now=NOW)
    assert note.subject == "[hitl] Approval needed: content-review \u2014 Publish the Q1 launch post"
    text = note.text
    assert "Workflow:  content-review" in text
    assert "Session:   sess-42" in text
    assert "Call id:   call-1" in text
    assert "2025-03-03T12:00:00+00:00 (in 2 days)" in text
    assert "Approvers: alice@example.com, editors" in text
    assert "  Title: Publish the Q1 launch post" in text  # labelled as the reviewer app labels it
    assert "  Meta: words: 2; tags: a" in text  # nested values read as text, not JSON
    assert "approved: boolean (required) - Publish it?" in text
    assert "comment: string | null (optional)" in text
    assert "Decide: https://hitl.example.com/decide?token=abc" in text
    assert note.decide_url == "https://hitl.example.com/decide?token=abc"
    assert note.recipients == ["alice@example.com"]
    assert (note.event_id, note.session_id, note.call_id, note.workflow) == (
        "evt-1", "sess-42", "call-1", "content-review",
    )
    assert '<a href="https://hitl.example.com/decide?token=abc">' in note.html


def test_reminder_and_escalation_subjects() -> None:
    reminder = render_notification(make_event(event_type="hitl.request.reminder", reminder_number=2), now=NOW)
    assert reminder.subject.startswith("[hitl] Reminder 2: Approval needed: content-review")
    assert "Reminder 2: this request is still waiting" in reminder.text
    escalated = render_notification(
        make_event(event_type="hitl.request.escalated", escalated_from=["bob@example.com"],
                   approvers=["boss@example.com"]),
        now=NOW,
    )
    assert escalated.subject.startswith("[hitl] Escalated: Approval needed: content-review")
    assert "no decision from bob@example.com in time" in escalated.text
    assert escalated.recipients == ["boss@example.com"]


def test_no_deadline_and_overdue() -> None:
    assert "Deadline:  no deadline" in render_notification(make_event(deadline=None), now=NOW).text
    late = render_notification(make_event(deadline=(BASE - dt.timedelta(hours=3)).isoformat()), now=NOW)
    assert "(overdue by 3 hours)" in late.text


def test_missing_decide_url_falls_back_to_the_api() -> None:
    settings = Settings(public_base_url="https://func.example.net")
    note = render_notification(make_event(decide_url=None, session_id="s/1"), settings, now=NOW)
    assert note.decide_url == "https://func.example.net/api/sessions/s%2F1"
    assert "POST to https://func.example.net/api/sessions/s%2F1/responses" in note.text
    assert '{"call_id": "call-1", "result": "..."}' in note.text
    assert "https://func.example.net/api/sessions/s%2F1/responses" in note.html


def test_every_user_value_is_escaped_in_html() -> None:
    evil = "<script>alert('x')</script>"
    note = render_notification(
        make_event(
            data={"title": evil, evil: "key too", "nested": {"x": evil}},
            workflow="wf<b>",
            approvers=[f"{evil}@example.com", "a<i>@example.com"],
            decide_url="javascript:alert(1)",
            request_type=evil,
        ),
        now=NOW,
    )
    assert "<script>" not in note.html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in note.html
    assert "wf&lt;b&gt;" in note.html
    assert "<b>" not in note.html and "<i>" not in note.html
    assert 'href="javascript' not in note.html  # only http(s) links are clickable
    assert "<script>" in note.text  # the plain-text part shows the value as written


def test_subject_is_one_line_and_values_are_truncated() -> None:
    note = render_notification(
        make_event(data={"title": "line one\r\nBcc: victim@example.com\n", "long": "x" * 2000}), now=NOW
    )
    assert "\n" not in note.subject and "\r" not in note.subject
    assert note.subject.endswith("line one Bcc: victim@example.com")
    long_line = next(line for line in note.text.splitlines() if line.startswith("  Long: "))
    assert len(long_line) == len("  Long: ") + 500 and long_line.endswith("\u2026")


def test_money_and_times_read_as_in_the_reviewer_app() -> None:
    note = render_notification(make_event(data={"amount": 20000.0, "currency": "EUR",
                                                "due": "2025-03-02T12:00:00+00:00"}), now=NOW)
    assert "  Amount: 20,000.00 EUR" in note.text and "Currency" not in note.text
    assert "  Due: 2025-03-02 12:00 UTC (in 1 day)" in note.text
    assert "20,000.00 EUR" in note.html


def test_summary_falls_back_and_long_summaries_are_cut() -> None:
    assert render_notification(make_event(data={"n": 3, "note": "check me"}), now=NOW).subject.endswith("check me")
    assert render_notification(make_event(data={}), now=NOW).subject.endswith("ReviewRequest")
    long = render_notification(make_event(data={"title": "y" * 300}), now=NOW).subject
    assert long.endswith("\u2026") and len(long.split("\u2014 ", 1)[1]) == 80


def test_recipients_default_when_no_approver_is_an_address() -> None:
    event = make_event(approvers=["editors", "user-7"])
    assert render_notification(event, now=NOW).recipients == []
    settings = SimpleNamespace(public_base_url="http://x", notify_default_recipients=("ops@example.com",))
    assert render_notification(event, settings, now=NOW).recipients == ["ops@example.com"]  # type: ignore[arg-type]
    assert render_notification(event, now=NOW, default_recipients=["x@example.org"]).recipients == ["x@example.org"]
    assert recipients_for(["A@x.org", "a@x.org", "not an address", "b@y.org"]) == ["A@x.org", "b@y.org"]


def test_response_schema_descriptions() -> None:
    schema = {
        "type": "object",
        "$defs": {"Choice": {"enum": ["yes", "no"]}, "Detail": {"type": "object"}},
        "properties": {
            "choice": {"$ref": "#/$defs/Choice"},
            "detail": {"$ref": "#/$defs/Detail"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"const": "x"},
        },
        "required": ["choice"],
    }
    assert describe_response_schema(schema) == [
        'choice: one of "yes", "no" (required)',
        "detail: Detail (optional)",
        "tags: array of string (optional)",
        'kind: "x" (optional)',
    ]
    assert describe_response_schema({"type": "boolean"}) == ["a JSON value of type boolean"]
    assert describe_response_schema({}) == ["any JSON value"]


def test_relative_time() -> None:
    assert relative_time(NOW + dt.timedelta(days=2), NOW) == "in 2 days"
    assert relative_time(NOW + dt.timedelta(hours=1), NOW) == "in 1 hour"
    assert relative_time(NOW + dt.timedelta(minutes=5), NOW) == "in 5 minutes"
    assert relative_time(NOW + dt.timedelta(seconds=10), NOW) == "in less than a minute"
    assert relative_time(NOW - dt.timedelta(days=1), NOW) == "overdue by 1 day"


def test_malformed_request_event_is_rejected() -> None:
    with pytest.raises(InvalidEventError, match="does not carry a request view"):
        render_notification({"id": "e", "type": "hitl.request.created", "data": {"call_id": "c"}})
    with pytest.raises(InvalidEventError, match="not a CloudEvent"):
        render_notification({"type": "hitl.request.created"})


def test_event_grid_object_is_accepted() -> None:
    raw = make_event()

    class FakeEventGridEvent:  # the attribute names azure.functions.EventGridEvent has
        id = raw["id"]
        event_type = raw["type"]
        topic = "/topics/x"
        subject = raw["subject"]
        event_time = None

        def get_json(self) -> object:
            return json.loads(json.dumps(raw["data"]))

    event = CloudEvent.coerce(FakeEventGridEvent())
    assert event.type == "hitl.request.created" and event.data["call_id"] == "call-1"


def test_import_loads_no_optional_sdk() -> None:
    code = (
        "import sys, hitl_core.notify\n"
        "bad = [m for m in ('redis', 'aiosmtplib', 'httpx', 'azure') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_events_as_the_service_publishes_them() -> None:
    """The producer's own helpers (hitl_core.events / hitl_core.views) make events we can render."""
    from hitl_core.events import EventType
    from hitl_core.events import make_event as publish_event
    from hitl_core.views import RequestView as ServiceRequestView

    view = ServiceRequestView(
        call_id="c-9", session_id="s-9", workflow="expense-approval", executor_id="manager",
        request_type="ExpenseApproval", data={"amount": 120.5, "description": "Team lunch"},
        response_schema={"type": "object", "properties": {"approved": {"type": "boolean"}}, "required": ["approved"]},
        created_at=BASE, deadline=BASE + dt.timedelta(hours=5), approvers=["m@example.com"],
        decide_url="https://f.example.net/api/decide?token=t",
    )
    data = view.model_dump(mode="json")
    data["reminder_number"] = 1
    event = publish_event(EventType.REQUEST_REMINDER, workflow="expense-approval", session_id="s-9",
                          call_id="c-9", data=data, discriminator="1")
    note = render_notification(event, now=BASE)
    assert note.subject == "[hitl] Reminder 1: Approval needed: expense-approval \u2014 Team lunch"
    assert "(in 5 hours)" in note.text and "approved: boolean (required)" in note.text
    assert note.recipients == ["m@example.com"] and note.event_id == event["id"]


def test_a_quorum_request_tells_how_many_votes_are_needed_and_who_voted() -> None:
    from hitl_core.notify.render import render_notification as render

    data = {"call_id": "c", "session_id": "s", "workflow": "expense-approval", "approvers": ["role:finance"],
            "approval": {"quorum": 2, "veto": True},
            "votes": [{"voter": "fay", "approve": True, "result": {"approved": True}}]}
    event = {"id": "e1", "type": "hitl.request.created", "source": "/workflows/expense-approval", "subject": "s",
             "specversion": "1.0", "data": data}
    notification = render(event)
    assert "Votes:     2 approvals needed; 1 so far (fay approved). One rejection ends it." in notification.text
    assert "1 so far (fay approved)" in notification.html
    plain = render({**event, "data": {k: v for k, v in data.items() if k not in ("approval", "votes")}})
    assert "Votes:" not in plain.text and "approvals needed" not in plain.html


def test_a_policy_whose_first_answer_decides_shows_no_votes() -> None:
    """A quorum-1 policy is kept on a request for its escalation chain (or claim rule): no "1 approvals needed"."""
    approval = {"quorum": 1, "veto": True, "escalation": [{"after_seconds": 60, "action": "expire"}]}
    note = render_notification(make_event(approval=approval), now=NOW)
    assert "Votes:" not in note.text and "approvals needed" not in note.html


def test_an_escalation_step_says_which_step_and_why_the_reader_gets_it() -> None:
    from hitl_core.notify.models import Recipient

    escalation = {"step": 2, "index": 1, "of": 3, "action": "escalate", "mode": "replace", "from": ["user:amy"],
                  "to": ["user:mona"], "missed_deadline": "2025-03-01T09:30:00.123456+00:00"}
    event = make_event(event_type="hitl.request.escalated", escalated_from=["user:amy"], approvers=["user:mona"],
                       escalation=escalation)
    mona = Recipient(email="mona@example.com", person_id="mona", decide_url="https://hitl.example.com/d?token=m")
    personal = render_notification(event, now=NOW, recipient=mona)
    assert personal.subject.startswith("[hitl] Escalated (step 2 of 3): Approval needed: content-review")
    assert ("Escalated to you: no decision by 2025-03-01T09:30:00+00:00 from user:amy. "
            "This is step 2 of 3 of the request's escalation chain.") in personal.text
    assert "Escalated to you: no decision by 2025-03-01T09:30:00+00:00" in personal.html
    webhook = render_notification(event, now=NOW)  # not one person's copy: says to whom
    assert "Escalated to user:mona: no decision by 2025-03-01T09:30:00+00:00 from user:amy." in webhook.text
    reminder = render_notification(make_event(event_type="hitl.request.reminder",
                                              escalation={"step": 1, "of": 3, "action": "remind"}), now=NOW)
    assert "Reminder (escalation step 1 of 3): this request is still waiting for a decision." in reminder.text
    # what a producer may get wrong is ignored, never fatal
    odd = render_notification(make_event(event_type="hitl.request.escalated", escalated_from=["bob"],
                                         escalation={"step": "two", "of": None}), now=NOW)
    assert odd.subject.startswith("[hitl] Escalated: ") and "no decision from bob in time" in odd.text
    assert render_notification(make_event(event_type="hitl.request.escalated", escalation="x"), now=NOW).subject
