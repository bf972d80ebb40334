"""Decision forms generated from response schemas: every kind of field, read back into an answer the
response type accepts, and the service's errors placed next to their fields."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, TypeAdapter

from hitl_core.webapp.forms import DECISION, build_form, field_errors, read_answer
from hitl_core.webapp.present import due, relative, rows
from hitl_core.workflow.request_info import response_json_schema


class Severity(StrEnum):
    low = "low"
    high = "high"


class RichAnswer(BaseModel):
    approved: bool
    severity: Severity = Severity.low
    route: Literal["fast", "slow"] = Field(description="How to proceed.")
    score: int = Field(ge=1, le=5)
    ratio: float | None = None
    notify_team: bool = False
    reason: str = Field(default="", max_length=80)
    notes: str | None = Field(default=None, max_length=2000)


def test_each_kind_of_field_becomes_the_right_control() -> None:
    form = build_form(response_json_schema(RichAnswer))
    kinds = {f.name: f.kind for f in form.fields}
    assert kinds == {"approved": "decision", "severity": "choice", "route": "choice", "score": "number",
                     "ratio": "number", "notify_team": "checkbox", "reason": "text", "notes": "area"}
    assert form.decision is not None and form.decision.name == "approved"
    by_name = {f.name: f for f in form.fields}
    assert by_name["route"].options == [("fast", "fast"), ("slow", "slow")] and by_name["route"].required
    assert by_name["route"].description == "How to proceed."
    assert (by_name["score"].minimum, by_name["score"].maximum, by_name["score"].integer) == (1, 5, True)
    assert by_name["severity"].default == "low" and not by_name["severity"].required
    assert not by_name["ratio"].required and by_name["reason"].max_length == 80


def test_a_posted_form_reads_back_into_a_valid_answer() -> None:
    form = build_form(response_json_schema(RichAnswer))
    answer, readable = read_answer(form, {DECISION: ["false"], "severity": ["high"], "route": ["slow"],
                                          "score": ["4"], "ratio": [""], "notify_team": ["true"], "reason": ["late"],
                                          "notes": [""]})
    assert readable
    assert answer == {"approved": False, "severity": "high", "route": "slow", "score": 4, "notify_team": True,
                      "reason": "late"}
    assert TypeAdapter(RichAnswer).validate_python(answer).severity is Severity.high


def test_unreadable_fields_are_named_and_nothing_is_sent() -> None:
    form = build_form(response_json_schema(RichAnswer))
    _, readable = read_answer(form, {"route": ["sideways"], "score": ["four"]})
    assert not readable
    errors = {f.name: f.error for f in form.fields if f.error}
    assert errors == {"approved": "Choose one of the actions.", "route": "Choose one of the options.",
                      "score": "Enter a whole number."}


def test_service_errors_go_next_to_their_fields() -> None:
    form = build_form(response_json_schema(RichAnswer))
    field_errors(form, [{"loc": ["score"], "msg": "Input should be less than or equal to 5"},
                        {"loc": [], "msg": "Something about the whole answer"}])
    assert {f.name: f.error for f in form.fields if f.error} == {"score": "Input should be less than or equal to 5"}
    assert form.errors == ["Something about the whole answer"]


def test_a_schema_without_a_boolean_gets_one_submit_button() -> None:
    class Pick(BaseModel):
        choice: Literal[1, 2, 3]

    form = build_form(response_json_schema(Pick))
    assert form.decision is None
    answer, readable = read_answer(form, {"choice": ["2"]})
    assert readable and answer == {"choice": 2}


def test_request_data_reads_as_a_person_would() -> None:
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    schema = {"properties": {"employee": {"title": "Employee", "description": "Who spent it"},
                             "amount": {"title": "Amount"}, "currency": {"title": "Currency"},
                             "when": {"title": "When"}, "notes": {"title": "Notes"}}}
    shown = rows({"employee": "erin", "amount": 5000.0, "currency": "EUR", "when": "2026-12-02T12:00:00+00:00",
                  "notes": "x" * 400}, schema, now)
    assert [(r.label, r.text) for r in shown[:2]] == [("Employee", "erin"), ("Amount", "5,000.00 EUR")]
    assert shown[0].description == "Who spent it"
    assert shown[2].instant and shown[2].relative == "in 2 days" and shown[2].text == "2026-12-02 12:00 UTC"
    assert shown[3].folded and shown[3].summary.endswith("…")
    assert relative(now - dt.timedelta(hours=3), now) == "3 hours ago"
    soon = due(now + dt.timedelta(hours=5), now)
    assert soon is not None and soon["urgent"] and soon["relative"] == "due in 5 hours"
    late = due(now - dt.timedelta(minutes=30), now)
    assert late is not None and late["relative"] == "overdue since 30 minutes"


async def test_approvers_read_as_names_and_roles() -> None:
    from hitl_core.directory.models import Person
    from hitl_core.webapp.present import approvers_text, person_label

    class Directory:
        async def person(self, key: str) -> Person | None:
            return Person(id="amy", display_name="Amy Adams") if key == "amy" else None

    people = Directory()
    assert await approvers_text(people, ["user:amy", "role:finance", "zed"]) == \
        "Amy Adams, everyone in the finance role, zed"  # a plain entry (older checkpoints) is a user
    assert await approvers_text(people, []) == "anyone signed in"
    assert await person_label(people, None) == "someone"
