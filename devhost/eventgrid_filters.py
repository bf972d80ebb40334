"""Event Grid subscription filters, evaluated the way Event Grid evaluates them.

An app declares what each Event Grid trigger function's subscription lets through
(``app.eventgrid_subscriptions``: function name -> filter), in the shape the Bicep gives the
subscription's ``filter`` property, so one declaration serves Azure and the local host:

* a list of event types (the former, short form): ``["hitl.request.created", ...]``, or
* ``{"includedEventTypes": [...], "advancedFilters": [{"operatorType": "BoolEquals",
  "key": "data.deadline_tracked", "value": true}, ...]}``, or
* ``None``: the deployment makes no subscription for that function, so it gets no event (hitl's
  ``notify_reviewers`` when no notification channel is configured).

Why the local host must honour advanced filters too: a function that Azure never wakes for an
event must not be woken for it locally, or the local host runs (and measures) executions that
do not exist in Azure. As in Event Grid, every advanced filter must match (AND), a key is an
envelope attribute (``type``, ``subject``, ``source``, ``id`` or an extension) or ``data.``
followed by a dotted path into the event's data, a missing key matches only
``IsNullOrUndefined``, and string comparisons ignore case. Only the operators listed in
:data:`OPERATORS` are supported; any other is refused when the host starts, naming them, rather
than silently delivering everything.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["OPERATORS", "SubscriptionFilter", "deliveries", "parse_filters"]

_MISSING = object()


def _bool_equals(actual: Any, expected: Any) -> bool:
    return isinstance(actual, bool) and actual is bool(expected)


def _string_in(actual: Any, expected: frozenset[str]) -> bool:
    return isinstance(actual, str) and actual.casefold() in expected


def _string_not_in(actual: Any, expected: frozenset[str]) -> bool:
    return isinstance(actual, str) and actual.casefold() not in expected


def _is_not_null(actual: Any, expected: Any) -> bool:
    return actual is not None


def _is_null(actual: Any, expected: Any) -> bool:
    return actual is None


#: operatorType -> (does ``actual`` match ``expected``; the name of the filter's value field). The
#: ``values`` of a string operator are case-folded once, when the filter is parsed.
OPERATORS: dict[str, tuple[Callable[[Any, Any], bool], str | None]] = {
    "BoolEquals": (_bool_equals, "value"),
    "StringIn": (_string_in, "values"),
    "StringNotIn": (_string_not_in, "values"),
    "IsNotNull": (_is_not_null, None),
    "IsNullOrUndefined": (_is_null, None),
}


def _lookup(event: Mapping[str, Any], key: str) -> Any:
    """The value ``key`` names in the event, ``_MISSING`` when there is none."""
    parts = key.split(".")
    node: Any = event
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


@dataclass(frozen=True)
class _AdvancedFilter:
    operator: str
    key: str
    expected: Any

    def matches(self, event: Mapping[str, Any]) -> bool:
        actual = _lookup(event, self.key)
        if actual is _MISSING:
            return self.operator == "IsNullOrUndefined"
        test, _ = OPERATORS[self.operator]
        return test(actual, self.expected)


@dataclass(frozen=True)
class SubscriptionFilter:
    """What one subscription delivers: its event types (None: every type) and its advanced filters;
    nothing when the function has no subscription (``subscribed`` false)."""

    event_types: frozenset[str] | None
    advanced: tuple[_AdvancedFilter, ...] = ()
    subscribed: bool = True

    def matches(self, event: Mapping[str, Any]) -> bool:
        if not self.subscribed:
            return False
        if self.event_types is not None and event.get("type") not in self.event_types:
            return False
        return all(f.matches(event) for f in self.advanced)

    @classmethod
    def parse(cls, function: str, declared: Collection[str] | Mapping[str, Any] | None) -> SubscriptionFilter:
        """One function's declared filter; ValueError naming the function and the problem."""
        if declared is None:
            return cls(frozenset(), subscribed=False)
        if not isinstance(declared, Mapping):
            return cls(frozenset(str(t) for t in declared))
        unknown = set(declared) - {"includedEventTypes", "advancedFilters"}
        if unknown:
            raise ValueError(f"subscription filter of {function!r}: unsupported fields {sorted(unknown)} "
                             "(the local host honours includedEventTypes and advancedFilters)")
        types = declared.get("includedEventTypes")
        advanced = tuple(_parse_advanced(function, item) for item in declared.get("advancedFilters") or ())
        return cls(None if types is None else frozenset(str(t) for t in types), advanced)


def _parse_advanced(function: str, item: Mapping[str, Any]) -> _AdvancedFilter:
    operator = item.get("operatorType")
    if operator not in OPERATORS:
        raise ValueError(f"subscription filter of {function!r}: operatorType {operator!r} is not supported by the "
                         f"local host (supported: {', '.join(sorted(OPERATORS))})")
    key = item.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"subscription filter of {function!r}: an advanced filter needs a key")
    _, value_field = OPERATORS[operator]
    if value_field is not None and value_field not in item:
        raise ValueError(f"subscription filter of {function!r}: {operator} on {key!r} needs {value_field!r}")
    if value_field is None:
        return _AdvancedFilter(operator, key, None)
    expected = item[value_field]
    if value_field == "values":
        expected = frozenset(str(v).casefold() for v in expected)
    return _AdvancedFilter(operator, key, expected)


def parse_filters(declared: Mapping[str, Collection[str] | Mapping[str, Any] | None] | None,
                  ) -> dict[str, SubscriptionFilter]:
    """Every function's filter (a function not named gets every event, as a subscription without filter;
    one named with None gets none, as a function without a subscription)."""
    return {name: SubscriptionFilter.parse(name, value) for name, value in (declared or {}).items()}


def deliveries(events: Sequence[dict[str, Any]], subscribers: Sequence[str],
               filters: Mapping[str, SubscriptionFilter]) -> list[tuple[dict[str, Any], str]]:
    """The (event, function) pairs a publish creates: one per subscription whose filter lets it through."""
    return [(event, fn) for event in events for fn in subscribers
            if fn not in filters or filters[fn].matches(event)]
