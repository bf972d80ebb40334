"""Event Grid subscription filters as the local host applies them (``devhost/eventgrid_filters.py``).

The rules are Event Grid's: event types first, then every advanced filter must match; a missing key
matches only ``IsNullOrUndefined``; string comparisons ignore case; a filter the local host cannot
evaluate is refused when it starts instead of letting every event through.
"""

from __future__ import annotations

from typing import Any

import pytest

from devhost.eventgrid_filters import SubscriptionFilter, deliveries, parse_filters

TRACKED = {"includedEventTypes": ["hitl.request.created", "hitl.request.resolved"],
           "advancedFilters": [{"operatorType": "BoolEquals", "key": "data.deadline_tracked", "value": True}]}


def event(kind: str = "hitl.request.created", **data: Any) -> dict[str, Any]:
    return {"id": "e1", "type": kind, "source": "/workflows/w", "subject": "sessions/s1", "data": data}


def test_bool_equals_lets_through_only_a_true_flag_of_an_included_type() -> None:
    flt = SubscriptionFilter.parse("track_deadlines", TRACKED)
    assert flt.matches(event(deadline_tracked=True))
    assert flt.matches(event("hitl.request.resolved", deadline_tracked=True))
    assert not flt.matches(event(deadline_tracked=False))
    assert not flt.matches(event())  # no such key: an event published before the flag existed
    assert not flt.matches(event(deadline_tracked="true"))  # a string is not a bool
    assert not flt.matches(event("hitl.request.reminder", deadline_tracked=True))  # type not included


def test_nested_keys_strings_and_nulls() -> None:
    flt = SubscriptionFilter.parse("f", {"advancedFilters": [
        {"operatorType": "StringIn", "key": "data.approval.mode", "values": ["Quorum", "ALL"]},
        {"operatorType": "IsNullOrUndefined", "key": "data.error"},
        {"operatorType": "StringNotIn", "key": "subject", "values": ["sessions/blocked"]},
        {"operatorType": "IsNotNull", "key": "data.deadline"},
    ]})
    good = event(approval={"mode": "quorum"}, deadline="2026-12-01T00:00:00+00:00")
    assert flt.event_types is None and flt.matches(good)  # no includedEventTypes: every type
    assert not flt.matches(event(approval={"mode": "any"}, deadline="x"))
    assert not flt.matches({**good, "data": {**good["data"], "error": "boom"}})
    assert not flt.matches({**good, "subject": "SESSIONS/BLOCKED"})
    assert not flt.matches(event(approval={"mode": "all"}, deadline=None))
    assert not flt.matches(event(approval="all", deadline="x"))  # a path through a non-object finds nothing


def test_the_short_form_is_a_list_of_event_types() -> None:
    flt = SubscriptionFilter.parse("notify", ["hitl.request.created"])
    assert flt.matches(event()) and not flt.matches(event("hitl.request.resolved"))


@pytest.mark.parametrize(("declared", "message"), [
    ({"advancedFilters": [{"operatorType": "NumberInRange", "key": "data.x", "values": [[1, 2]]}]},
     "operatorType 'NumberInRange' is not supported by the local host (supported: BoolEquals, IsNotNull"),
    ({"advancedFilters": [{"operatorType": "BoolEquals", "key": "data.x"}]}, "BoolEquals on 'data.x' needs 'value'"),
    ({"advancedFilters": [{"operatorType": "BoolEquals", "value": True}]}, "an advanced filter needs a key"),
    ({"subjectBeginsWith": "sessions/"}, "unsupported fields ['subjectBeginsWith']"),
])
def test_a_filter_the_local_host_cannot_apply_is_refused_by_name(declared: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_filters({"track_deadlines": declared})
    assert "'track_deadlines'" in str(raised.value) and message in str(raised.value)


def test_each_publish_makes_one_delivery_per_subscription_that_lets_the_event_through() -> None:
    filters = parse_filters({"notify_reviewers": ["hitl.request.created"], "track_deadlines": TRACKED})
    plain, timed = event(deadline_tracked=False), {**event(deadline_tracked=True), "id": "e2"}
    pairs = deliveries([plain, timed], ["notify_reviewers", "track_deadlines", "audit_everything"], filters)
    assert [(e["id"], fn) for e, fn in pairs] == [
        ("e1", "notify_reviewers"), ("e1", "audit_everything"),
        ("e2", "notify_reviewers"), ("e2", "track_deadlines"), ("e2", "audit_everything")]


def test_a_function_declared_without_a_subscription_gets_no_event() -> None:
    """``None``: the deployment makes no subscription for it (hitl's notify_reviewers without a
    notification channel), so no event reaches it, unlike a function not named at all."""
    filters = parse_filters({"notify_reviewers": None, "track_deadlines": TRACKED})
    assert not filters["notify_reviewers"].matches(event(deadline_tracked=True))
    pairs = deliveries([event(deadline_tracked=True)], ["notify_reviewers", "track_deadlines", "audit_everything"],
                       filters)
    assert [fn for _, fn in pairs] == ["track_deadlines", "audit_everything"]
