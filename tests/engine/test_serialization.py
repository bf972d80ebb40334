"""JSON checkpoint encoding: round trips (hypothesis), loud failures, safe decoding."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hitl_core import SerializationError
from hitl_core.serialization import decode, encode, plain


class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclass
class Inner:
    name: str
    when: dt.datetime
    tags: tuple[str, ...] = ()


@dataclass
class Outer:
    inner: Inner
    amounts: dict[int, Decimal] = field(default_factory=dict)
    colour: Colour = Colour.RED
    anything: Any = None


class Model(BaseModel):
    title: str
    score: float
    inner: list[int]


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes(timezones=st.just(dt.UTC))
    | st.dates()
    | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.binary(max_size=20)
    | st.sampled_from(list(Colour))
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4)
    | st.dictionaries(st.integers(), children, max_size=3)
    | st.tuples(children, children)
    | st.builds(Inner, name=st.text(max_size=10), when=st.datetimes(timezones=st.just(dt.UTC)),
                tags=st.lists(st.text(max_size=3), max_size=3).map(tuple))
    | st.builds(Model, title=st.text(max_size=10), score=st.floats(allow_nan=False, allow_infinity=False),
                inner=st.lists(st.integers(), max_size=3)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_values_round_trip_to_their_own_types(value: Any) -> None:
    import json

    text = json.dumps(encode(value))  # must be plain JSON
    restored = decode(json.loads(text))
    assert restored == value
    assert type(restored) is type(value)


@given(st.builds(Outer, inner=st.builds(Inner, name=st.text(), when=st.datetimes(timezones=st.just(dt.UTC))),
                 amounts=st.dictionaries(st.integers(), st.decimals(allow_nan=False, allow_infinity=False)),
                 colour=st.sampled_from(list(Colour)), anything=values))
@settings(max_examples=100, deadline=None)
def test_nested_dataclasses_round_trip(value: Outer) -> None:
    assert decode(encode(value)) == value


def test_special_floats_and_sets_round_trip() -> None:
    value = {"inf": float("inf"), "set": {1, 2}, "frozen": frozenset({"a"}), "delta": dt.timedelta(seconds=90)}
    restored = decode(encode(value))
    assert restored["inf"] == float("inf") and restored["set"] == {1, 2}
    assert restored["frozen"] == frozenset({"a"}) and restored["delta"] == dt.timedelta(seconds=90)


def test_unserialisable_value_fails_with_its_path() -> None:
    with pytest.raises(SerializationError, match=r"state\['a'\]\[1\]\.anything: a builtins\.object"):
        encode({"a": [1, Outer(inner=Inner("x", dt.datetime.now(dt.UTC)), anything=object())]}, "state")


def test_decoding_refuses_types_that_are_not_data_classes() -> None:
    with pytest.raises(SerializationError, match="not a dataclass"):
        decode({"__hitl__": "dataclass", "t": "os:system", "v": {}})
    with pytest.raises(SerializationError, match="cannot resolve"):
        decode({"__hitl__": "dataclass", "t": "no_such_module_xyz:Thing", "v": {}})


def test_a_dict_that_looks_like_a_tag_is_preserved() -> None:
    tricky = {"__hitl__": "dataclass", "t": "os:system", "v": {}}
    assert decode(encode(tricky)) == tricky


def test_plain_view_drops_tags() -> None:
    value = Outer(inner=Inner("n", dt.datetime(2026, 1, 2, tzinfo=dt.UTC), ("t",)), colour=Colour.BLUE)
    view = plain(encode(value))
    assert view == {
        "inner": {"name": "n", "when": "2026-01-02T00:00:00+00:00", "tags": ["t"]},
        "amounts": {},
        "colour": 2,
        "anything": None,
    }
    assert plain(encode(uuid.UUID(int=1))) == "00000000-0000-0000-0000-000000000001"
