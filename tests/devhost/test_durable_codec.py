"""The local Durable runtime decodes activity payloads exactly as the worker does, without warnings.

The worker's ``ActivityTriggerConverter`` calls ``df_loads`` without a type (it does not forward
the parameter's annotation); the runtime passes ``expected_type=object`` so the SDK's "called
without expected_type" ``DeprecationWarning`` never fires, in strict and in loose typing mode.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, TypedDict

import azure.functions as func
import pytest
from azure.functions import _durable_functions as sdk_codec
from azure.functions.durable_functions import ActivityTriggerConverter

from devhost.durable import _codec

STRICT = "AZURE_FUNCTIONS_DURABLE_STRICT_TYPING"

PAYLOADS = [
    '{"session_id": "s-1", "call_id": "c-1", "number": 2}',
    '"plain text"',
    "3",
    "true",
    "null",
    '[1, {"a": [2, 3]}]',
]


class Reminder(TypedDict):
    session_id: str
    call_id: str
    number: int


def worker_decode(text: str) -> Any:
    """What the Python worker hands an ``activityTrigger`` parameter (warnings silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return ActivityTriggerConverter.decode(func.meta.Datum(type="json", value=text), trigger_metadata={})


@pytest.fixture(params=["strict", "loose"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "strict":
        monkeypatch.setenv(STRICT, "1")
    else:
        monkeypatch.delenv(STRICT, raising=False)
    # Re-arm the SDK's one-shot advisory, so an untyped df_loads call would warn here.
    monkeypatch.setattr(sdk_codec, "_no_expected_type_notice_emitted", False)
    return str(request.param)


def test_the_test_session_runs_the_sdk_in_strict_mode() -> None:
    assert sdk_codec._is_strict_mode()


@pytest.mark.parametrize("text", PAYLOADS)
def test_activity_input_decodes_like_the_worker_without_warning(mode: str, text: str) -> None:
    _, loads = _codec()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loads(text)
    assert value == worker_decode(text) == json.loads(text)


def test_typed_dict_activity_input_is_a_plain_dict(mode: str) -> None:
    dumps, loads = _codec()
    sent: Reminder = {"session_id": "s-1", "call_id": "c-1", "number": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        received = loads(dumps(sent))
    assert type(received) is dict
    assert received == sent


def test_custom_object_envelope_is_refused_in_strict_mode_as_by_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT, "1")
    envelope = json.dumps({"__class__": "Thing", "__module__": __name__, "__data__": {}})
    _, loads = _codec()
    with pytest.raises(TypeError):
        loads(envelope)
    with pytest.raises(ValueError, match="activity trigger input"):
        worker_decode(envelope)


def test_non_json_text_falls_back_like_the_worker(mode: str) -> None:
    _, loads = _codec()
    with pytest.raises(json.JSONDecodeError):
        loads("not json")
    assert worker_decode("not json") == "not json"
