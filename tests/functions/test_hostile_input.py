"""No input makes a 5xx, and none is guessed at.

Every header, token and body below is hostile; each gets a precise 4xx (status, problem type,
and a detail that names the key, field or place), and a refused decision leaves the stored
session exactly as it was: the request still pending, no decision recorded.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import importlib
import inspect
import json
import math
import pkgutil
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict

import pydantic.dataclasses
import pytest
from pydantic import BaseModel, ConfigDict, Field

import devhost
import hitl_core
from hitl_core.errors import (
    HitlError,
    RequestAlreadyHandledError,
    RequestError,
    ResponseValidationError,
    SessionConflictError,
)
from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime
from hitl_core.functions.problem import from_error, json_value, problem
from hitl_core.functions.runtime import close_runtime
from hitl_core.workflow.request_info import validate_response

from .conftest import call, http

ROOT = Path(__file__).resolve().parents[2]
#: The reviewer every request below names, calling with roles that may read any session.
RITA = {"x-hitl-user": "rita", "x-hitl-roles": "admins,auditors"}
JSON_BODY = {"content-type": "application/json"}
PROBLEM = "application/problem+json"


# -- helpers -------------------------------------------------------------------------------------

async def pending_session(session_id: str) -> str:
    """A content-review session started by olive, waiting for rita; its pending call_id."""
    status, view, _ = await call("start_session", http(
        "POST", "/api/workflows/content-review/sessions", route={"workflow": "content-review"},
        body={"session_id": session_id, "input": {"draft": "Hello", "reviewers": ["rita"]}},
        headers={"x-hitl-user": "olive"}))
    assert status == 201, view
    await get_runtime().service.drain()  # the outbox clean-up write happens now, not during a test
    call_id: str = view["pending_requests"][0]["call_id"]
    return call_id


async def session(session_id: str) -> dict[str, Any]:
    """GET /api/sessions/{id}: the stored session as a caller sees it."""
    status, view, _ = await call("get_session", http("GET", f"/api/sessions/{session_id}",
                                                     route={"session_id": session_id}, headers=RITA))
    assert status == 200, view
    assert isinstance(view, dict)
    return view


async def assert_unchanged(before: dict[str, Any], call_id: str) -> None:
    after = await session(before["session_id"])
    assert after == before
    assert after["status"] == "pending"
    assert [r["call_id"] for r in after["pending_requests"]] == [call_id]
    assert after["decisions"] == []


async def respond_raw(session_id: str, raw: bytes, headers: dict[str, str] | None = None,
                      ) -> tuple[int, Any, Any]:
    return await call("post_response", http("POST", f"/api/sessions/{session_id}/responses", raw=raw,
                                            route={"session_id": session_id},
                                            headers={**JSON_BODY, **RITA, **(headers or {})}))


def assert_problem(status: int, body: Any, response: Any, expected_status: int, title: str) -> dict[str, Any]:
    assert (status, response.mimetype) == (expected_status, PROBLEM), body
    assert isinstance(body, dict)
    assert body["title"] == title and body["status"] == expected_status
    assert body["type"] == f"https://hitl.dev/problems/{title.lower().replace(' ', '-')}"
    return body


def is_text(value: str) -> bool:
    """False for a value with lone surrogates: bytes that were not UTF-8, as a host decodes them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def pointer_of(loc: list[Any]) -> str:
    """The JSON Pointer of a pydantic-style ``loc``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in loc)


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


# -- 1. repeated keys: 400, naming the key; nothing is decided --------------------------------------

@pytest.mark.parametrize(("template", "key", "pointer"), [
    ('{"call_id":"CID","result":{"approved":true,"approved":false}}', "approved", "/result"),
    ('{"call_id":"other","call_id":"CID","result":{"approved":true}}', "call_id", ""),
    ('{"call_id":"CID","result":{"approved":true},"result":{"approved":false}}', "result", ""),
    ('{"call_id":"CID","result":{"approved":false,"feedback":"a","feedback":"b"}}', "feedback", "/result"),
    ('{"call_id":"CID","result":{"approved":true,"x":[0,{"d":{"e/f":1,"e/f":2}}]}}', "e/f", "/result/x/1/d"),
])
async def test_a_repeated_key_is_refused_naming_it(runtime: InMemoryEventPublisher, template: str, key: str,
                                                   pointer: str) -> None:
    call_id = await pending_session("dup")
    before = await session("dup")
    problem_ = assert_problem(*await respond_raw("dup", template.replace("CID", call_id).encode()), 400,
                              "Duplicate key")
    assert problem_["key"] == key and problem_["pointer"] == pointer
    assert f"has the key {json.dumps(key)} more than once" in problem_["detail"]
    assert (f"the object at {pointer}" if pointer else "the top-level object") in problem_["detail"]
    await assert_unchanged(before, call_id)
    # the same decision, sent once, is taken
    status, view, _ = await respond_raw("dup", json.dumps({"call_id": call_id, "result": {"approved": True}}).encode())
    assert status == 200 and view["status"] == "completed"


async def test_a_repeated_key_refuses_a_start_and_a_cancel(runtime: InMemoryEventPublisher) -> None:
    status, body, response = await call("start_session", http(
        "POST", "/api/workflows/content-review/sessions", route={"workflow": "content-review"},
        raw=b'{"session_id":"twice","input":{"draft":"a","draft":"b"}}', headers={**JSON_BODY, **RITA}))
    assert assert_problem(status, body, response, 400, "Duplicate key")["pointer"] == "/input"
    status, _, _ = await call("get_session", http("GET", "/", route={"session_id": "twice"}, headers=RITA))
    assert status == 404  # nothing was started
    call_id = await pending_session("keep")
    before = await session("keep")
    status, body, response = await call("cancel_session", http(
        "POST", "/api/sessions/keep/cancel", route={"session_id": "keep"}, raw=b'{"reason":"a","reason":"b"}',
        headers={**JSON_BODY, **RITA}))
    assert assert_problem(status, body, response, 400, "Duplicate key")["key"] == "reason"
    await assert_unchanged(before, call_id)


# -- 2. non-finite numbers: 422, naming where ---------------------------------------------------------

@pytest.mark.parametrize(("template", "pointer", "named"), [
    ('{"call_id":"CID","result":{"approved":true,"feedback":NaN}}', "/result/feedback", "is NaN"),
    ('{"call_id":"CID","result":{"approved":Infinity}}', "/result/approved", "is Infinity"),
    ('{"call_id":"CID","result":{"approved":true,"score":-Infinity}}', "/result/score", "is -Infinity"),
    ('{"call_id":"CID","result":{"approved":true,"feedback":1e400}}', "/result/feedback", "overflows to infinity"),
    ('{"call_id":"CID","result":{"approved":true,"x":[1,2,-1e400]}}', "/result/x/2", "overflows to infinity"),
    ('{"call_id":"CID","result":{"approved":true,"a/b":{"~":NaN}}}', "/result/a~1b/~0", "is NaN"),
    ("NaN", "", "is NaN"),
])
async def test_a_non_finite_number_is_refused_naming_where(runtime: InMemoryEventPublisher, template: str,
                                                           pointer: str, named: str) -> None:
    call_id = await pending_session("nan")
    before = await session("nan")
    problem_ = assert_problem(*await respond_raw("nan", template.replace("CID", call_id).encode()), 422,
                              "Invalid body")
    assert problem_["pointer"] == pointer
    assert f"the number {f'at {pointer}' if pointer else 'at the top level'} {named}" in problem_["detail"]
    assert "JSON numbers must be finite" in problem_["detail"]
    (error,) = problem_["errors"]
    assert error["type"] == "finite_number" and pointer_of(error["loc"]) == pointer
    await assert_unchanged(before, call_id)


async def test_a_start_with_a_number_that_overflows_starts_nothing(runtime: InMemoryEventPublisher) -> None:
    raw = b'{"session_id":"big","input":{"employee":"ed","amount":1e400,"currency":"EUR","description":"d"}}'
    status, body, response = await call("start_session", http(
        "POST", "/api/workflows/expense-approval/sessions", route={"workflow": "expense-approval"}, raw=raw,
        headers={**JSON_BODY, **RITA}))
    problem_ = assert_problem(status, body, response, 422, "Invalid body")
    assert problem_["pointer"] == "/input/amount" and "the number at /input/amount overflows" in problem_["detail"]
    status, _, _ = await call("get_session", http("GET", "/", route={"session_id": "big"}, headers=RITA))
    assert status == 404


@pytest.mark.parametrize(("raw", "pointer", "named"), [
    (b'{"call_id":"CID","result":{"approved":true,"feedback":"\\ud800"}}', "/result/feedback", "the string"),
    (b'{"call_id":"CID","result":{"approved":true,"\\udfff":1}}', "/result", "the key"),
])
async def test_a_string_that_is_not_unicode_is_refused(runtime: InMemoryEventPublisher, raw: bytes, pointer: str,
                                                       named: str) -> None:
    call_id = await pending_session("uni")
    before = await session("uni")
    problem_ = assert_problem(*await respond_raw("uni", raw.replace(b"CID", call_id.encode())), 422, "Invalid body")
    assert problem_["pointer"] == pointer and named in problem_["detail"] and "not valid Unicode" in problem_["detail"]
    await assert_unchanged(before, call_id)


# -- 3. fields the response type does not declare: 422, naming the field ------------------------------

@pytest.mark.parametrize(("result", "errors"), [
    ({"approved": True, "bogus": 1}, [(["bogus"], "extra_forbidden")]),
    ({"approved": True, "feedback": "ok", "approved_by": "rita"}, [(["approved_by"], "extra_forbidden")]),
    ({"approved": "maybe", "extra": {"x": 1}}, [(["approved"], "bool_parsing"), (["extra"], "extra_forbidden")]),
])
async def test_an_undeclared_field_is_refused_and_the_request_stays_pending(
        runtime: InMemoryEventPublisher, result: dict[str, Any], errors: list[tuple[list[str], str]]) -> None:
    call_id = await pending_session("extra")
    before = await session("extra")
    problem_ = assert_problem(*await respond_raw("extra", json.dumps({"call_id": call_id, "result": result}).encode()),
                              422, "Invalid result")
    assert problem_["call_id"] == call_id
    assert [(e["loc"], e["type"]) for e in problem_["errors"]] == errors
    for loc, kind in errors:
        if kind == "extra_forbidden":
            assert f"{loc[0]}: not a declared field" in problem_["detail"]
    assert problem_["detail"].startswith(f"result for request {json.dumps(call_id)} does not match ReviewDecision: ")
    await assert_unchanged(before, call_id)
    status, view, _ = await respond_raw("extra", json.dumps(
        {"call_id": call_id, "result": {"approved": False, "feedback": "shorter"}}).encode())
    assert status == 200 and view["pending_requests"][0]["data"]["iteration"] == 2  # the workflow went on


class _Closed(BaseModel):
    approved: bool


class _Forbidding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approved: bool


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    approved: bool
    inner: _Closed | None = None


class _Nested(BaseModel):
    approved: bool
    details: _Open | None = None


class _Aliased(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    approved: bool = Field(alias="Approved")


@dataclasses.dataclass
class _Plain:
    approved: bool


@pydantic.dataclasses.dataclass(config=ConfigDict(extra="allow"))
class _OpenDataclass:
    approved: bool


class _Typed(TypedDict):
    approved: bool


class _OpenTyped(TypedDict):
    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    approved: bool


@pytest.mark.parametrize(("response_type", "answer", "undeclared"), [
    (_Closed, {"approved": True}, None),
    (_Closed, {"approved": True, "x": 1}, ["x"]),
    (_Forbidding, {"approved": True, "x": 1}, ["x"]),
    (_Open, {"approved": True, "x": 1}, None),  # allows extras ...
    (_Open, {"approved": True, "inner": {"approved": True, "y": 1}}, ["inner", "y"]),  # ... its fields need not
    (_Nested, {"approved": True, "details": {"approved": True, "z": 1}}, None),  # a nested model allowing extras
    (_Nested, {"approved": True, "x": 1, "details": {"approved": True}}, ["x"]),
    (_Aliased, {"Approved": True}, None),
    (_Aliased, {"approved": True}, None),  # by name, as the model allows
    (_Plain, {"approved": True, "x": 1}, ["x"]),
    (_OpenDataclass, {"approved": True, "x": 1}, None),
    (_Typed, {"approved": True, "x": 1}, ["x"]),
    (_OpenTyped, {"approved": True, "x": 1}, None),
    (list[_Plain], [{"approved": True}, {"approved": False, "x": 1}], [1, "x"]),
    (_Closed | None, {"approved": True, "x": 1}, ["x"]),
    (dict[str, Any], {"anything": 1}, None),
])
def test_undeclared_fields_follow_what_the_response_type_declares(response_type: Any, answer: Any,
                                                                  undeclared: list[Any] | None) -> None:
    if undeclared is None:
        validate_response(answer, response_type, call_id="c-1")
        return
    with pytest.raises(ResponseValidationError) as raised:
        validate_response(answer, response_type, call_id="c-1")
    assert [(e["loc"], e["type"]) for e in raised.value.errors] == [(undeclared, "extra_forbidden")]
    assert f"{'.'.join(map(str, undeclared))}: not a declared field" in str(raised.value)


def test_an_answer_to_a_typeddict_request_is_validated_not_crashed() -> None:
    """``isinstance(x, SomeTypedDict)`` raises TypeError: a TypedDict response type used to answer 500."""
    assert validate_response({"approved": True}, _Typed, call_id="c-1") == {"approved": True}


# -- 4. problem details carry JSON values, never Python reprs ------------------------------------------

def _all_hitl_errors() -> list[type[HitlError]]:
    """Every HitlError subclass of the library and the local host (both imported in full, so the list
    does not depend on what other tests happened to import)."""
    for package in (hitl_core, devhost):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module.name == "devhost.__main__":
                continue
            try:
                importlib.import_module(module.name)
            except ImportError:  # an optional SDK (cosmos, redis...) that is not installed
                continue
    found: dict[type[HitlError], None] = {}
    stack: list[type[HitlError]] = [HitlError]
    while stack:
        cls = stack.pop()
        found[cls] = None
        stack.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


#: Sample arguments by parameter name: values whose Python repr differs from their JSON (quotes,
#: None, True, nested dicts), so a repr in a detail is visible.
SAMPLES: dict[str, Any] = {
    "message": "free text, written by the raiser",
    "session_id": "s-1", "call_id": "c-1", "checkpoint_id": "cp-1", "name": "wf-x", "workflow": "wf-x",
    "known": ["content-review", "expense-approval"], "pending": ["c-2", "c-3"], "status": "completed",
    "decision": {"call_id": "c-1", "outcome": "answered", "result": {"approved": True, "feedback": None, "n": [1]},
                 "decided_by": "amy", "decided_at": "2026-01-02T03:04:05+00:00"},
    "errors": [{"loc": ["approved"], "msg": "Input should be a valid boolean", "type": "bool_type"},
               {"loc": [], "msg": "Field required", "type": "missing"}],
    "response_type": "ReviewDecision", "expected": None, "actual": "v2", "size": 3_000_000, "limit": 2_000_000,
    "retry_after": 1.5, "event_id": "e-1", "channels": ["email"], "channel": "email", "target": "amy@example.com",
    "attempts": 3, "failures": {"email": ValueError("smtp down")}, "delivered": ["webhook"], "expired": False,
    "instance_id": "i-1", "kind": "cycle",
    "claimed_by": "fay", "claimed_until": "2026-01-02T03:34:05+00:00",
    "vote": {"voter": "fay", "approve": True, "result": {"approved": True, "comment": None}, "via": "link",
             "at": "2026-01-02T03:04:05+00:00"},
}
REPR_MARKERS = ("{'", "['", "'}", "']", "None", "True", "False", "'s-1'", "'c-1'", "'wf-x'", "datetime.")


def _sample(cls: type[HitlError]) -> HitlError:
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    if all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return cls(SAMPLES["message"])
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in params:
        if p.name not in SAMPLES:
            if p.default is inspect.Parameter.empty:
                pytest.fail(f"{cls.__qualname__}: add a sample for its parameter {p.name!r} to SAMPLES")
            continue
        if p.kind == p.KEYWORD_ONLY:
            kwargs[p.name] = SAMPLES[p.name]
        else:
            args.append(SAMPLES[p.name])
    return cls(*args, **kwargs)


def _reprs_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [m for m in REPR_MARKERS if m in value]
    if isinstance(value, dict):
        return [m for v in value.values() for m in _reprs_in(v)]
    if isinstance(value, list):
        return [m for v in value for m in _reprs_in(v)]
    return []


def _strict_json(text: str) -> Any:
    def refuse(literal: str) -> Any:
        raise AssertionError(f"{literal} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("cls", _all_hitl_errors(), ids=lambda c: c.__qualname__)
def test_every_error_answers_json_values_never_python_reprs(cls: type[HitlError]) -> None:
    exc = _sample(cls)
    response = from_error(exc)
    body = _strict_json(response.get_body().decode())
    assert response.mimetype == PROBLEM and body["status"] == response.status_code
    assert isinstance(body["detail"], str) and body["detail"]
    assert _reprs_in(body) == [], body
    assert body["type"].startswith("https://hitl.dev/problems/")


def test_details_render_the_values_they_name_in_json() -> None:
    handled = from_error(RequestAlreadyHandledError("c-1", SAMPLES["decision"], session_id="s-1"))
    detail = json.loads(handled.get_body())["detail"]
    assert detail == ('request "c-1" was already handled by "amy" at "2026-01-02T03:04:05+00:00"; '
                      'recorded result: {"approved": true, "feedback": null, "n": [1]}')
    # messages built elsewhere with {value!r}: the error renders its own ids in JSON
    conflict = SessionConflictError(f"session {'s-1'!r} exists already with other input", session_id="s-1")
    assert str(conflict) == 'session "s-1" exists already with other input'
    refused = RequestError(f"request {'c-1'!r} of session {'s-1'!r}", session_id="s-1", call_id="c-1")
    assert str(refused) == 'request "c-1" of session "s-1"'


def test_extension_members_are_json_values() -> None:
    class View(BaseModel):
        at: dt.datetime

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    response = problem(409, "Conflict", "text", when=when, ids=("a", "b"), tags={"x"}, view=View(at=when),
                       ratio=math.nan, nested={"d": {1: None}}, plain=_Plain(approved=True))
    body = _strict_json(response.get_body().decode())
    assert body["when"] == "2026-01-02T03:04:05+00:00" and body["ids"] == ["a", "b"] and body["tags"] == ["x"]
    assert body["view"] == {"at": "2026-01-02T03:04:05Z"} and body["ratio"] == "nan"
    assert body["nested"] == {"d": {"1": None}} and body["plain"] == {"approved": True}
    assert json_value(float("inf")) == "inf"


# -- 5. the OpenAPI document lists every route the worker reports ---------------------------------------

def _worker_routes() -> set[tuple[str, str]]:
    table = json.loads((ROOT / "tests" / "worker" / "functions.json").read_text())
    routes: set[tuple[str, str]] = set()
    for function in table:
        for binding in function["bindings"]:
            if binding["type"] == "httpTrigger":
                routes.update((f"/api/{binding['route']}", method.upper()) for method in binding["methods"])
    return routes


def _template(route: str) -> re.Pattern[str]:
    return re.compile("".join(r"[^/]+" if part.startswith("{") else re.escape(part)
                              for part in re.split(r"(\{[^}]+\})", route)) + "$")


async def test_the_openapi_document_lists_every_route_of_the_app(runtime: InMemoryEventPublisher) -> None:
    status, doc, _ = await call("openapi", http("GET", "/api/openapi.json"))
    assert status == 200 and isinstance(doc, dict)
    documented = {(path, method.upper()) for path, item in doc["paths"].items() for method in item}
    routes = _worker_routes()
    assert {("/api/decide", "GET"), ("/api/decide", "POST"), ("/api/health", "GET"),
            ("/api/openapi.json", "GET")} <= routes
    matched: dict[tuple[str, str], set[tuple[str, str]]] = {route: set() for route in routes}
    for path, method in documented:
        owners = [route for route in routes if route[1] == method and _template(route[0]).match(path)]
        assert owners, f"{method} {path} is documented but no function serves it"
        for owner in owners:
            matched[owner].add((path, method))
    assert [route for route, paths in matched.items() if not paths] == [], "routes missing from the document"
    page = doc["paths"]["/api/decide"]
    assert page["get"]["parameters"] == [{"name": "token", "in": "query", "required": True,
                                          "description": "The signed token of an e-mailed decision link",
                                          "schema": {"type": "string"}}]
    assert set(page["get"]["responses"]["200"]["content"]) == {"text/html"}
    assert set(page["post"]["requestBody"]["content"]) == {"application/x-www-form-urlencoded"}
    assert set(page["post"]["responses"]["200"]["content"]) == {"text/html"}


# -- 6. hostile headers, tokens, parameters: never a 5xx --------------------------------------------------

async def _every_operation(headers: dict[str, str], session_id: str, call_id: str) -> list[tuple[str, int, Any]]:
    """One call of each HTTP function with ``headers`` (a decision on the known session included)."""
    json_headers = {**JSON_BODY, **headers}
    requests = [
        ("start_session", http("POST", "/", route={"workflow": "content-review"}, raw=b'{"input":{"draft":"x"}}',
                               headers=json_headers)),
        ("get_session", http("GET", "/", route={"session_id": session_id}, headers=headers)),
        ("post_response", http("POST", "/", route={"session_id": session_id}, headers=json_headers,
                               raw=json.dumps({"call_id": call_id, "result": {"approved": "maybe"}}).encode())),
        ("list_requests", http("GET", "/", headers=headers)),
        ("cancel_session", http("POST", "/", route={"session_id": "no-such"}, headers=headers)),
        ("get_audit", http("GET", "/", route={"session_id": session_id}, headers=headers)),
        ("decide_page", http("GET", "/", params={"token": "x.y"}, headers=headers)),
        ("decide_submit", http("POST", "/", raw=b"token=x.y&decision=approve",
                               headers={"content-type": "application/x-www-form-urlencoded", **headers})),
        ("health", http("GET", "/", headers=headers)),
        ("openapi", http("GET", "/", headers=headers)),
    ]
    answers = []
    for name, req in requests:
        status, body, response = await call(name, req)
        assert status < 500, (name, headers, body)
        if status >= 400 and name not in ("decide_page", "decide_submit"):
            assert response.mimetype == PROBLEM, (name, body)
        answers.append((name, status, body))
    return answers


NESTED = b64("[" * 100_000 + "]" * 100_000)
HOSTILE_PRINCIPALS = {
    "huge": "A" * 200_000,
    "nested": NESTED,
    "garbage": "!!not base64!!",
    "non-ascii": "ünïcödé",
    "not-utf8": "\udcff\udcfe",
    "base64-of-binary": b64(b"\xff\xfe\x00\x01"),
    "json-list": b64("[1, 2, 3]"),
    "nan": b64('{"claims": NaN}'),
    "claims-of-wrong-types": b64(json.dumps({"claims": [{"typ": ["roles"], "val": {"a": 1}}, 7, None],
                                             "name_typ": ["x"], "role_typ": {"y": 1}})),
    "many-claims": b64(json.dumps({"claims": [{"typ": "roles", "val": "r" * 300}] * 5000})),
    "duplicate-keys": b64('{"claims": [{"typ": "name", "val": "amy", "val": "rita"}]}'),
    "name-not-unicode": b64('{"claims": [{"typ": "name", "val": "r\\udce9ta"}]}'),
    "role-not-unicode": b64('{"claims": [{"typ": "name", "val": "rita"}, {"typ": "roles", "val": "\\ud800"}]}'),
}
#: Principals refused by name (400) on every API operation: not UTF-8, or naming a caller that is not Unicode.
REFUSED_PRINCIPALS = ("not-utf8", "name-not-unicode", "role-not-unicode")


@pytest.fixture
async def easyauth(runtime: InMemoryEventPublisher, monkeypatch: pytest.MonkeyPatch,
                   ) -> AsyncIterator[InMemoryEventPublisher]:
    """The app reading callers from X-MS-CLIENT-PRINCIPAL (as in Azure), same storage."""
    await close_runtime()
    monkeypatch.setenv("HITL_AUTH_MODE", "easyauth")
    publisher = InMemoryEventPublisher()
    get_runtime().service.publisher = publisher
    yield publisher


@pytest.mark.parametrize("which", list(HOSTILE_PRINCIPALS))
async def test_a_hostile_principal_never_fails_and_decides_nothing(easyauth: InMemoryEventPublisher,
                                                                   which: str) -> None:
    principal = HOSTILE_PRINCIPALS[which]
    rita = b64(json.dumps({"claims": [{"typ": "name", "val": "rita"}, {"typ": "roles", "val": "admins"}]}))
    status, view, _ = await call("start_session", http(
        "POST", "/", route={"workflow": "content-review"}, body={"session_id": "p", "input": {
            "draft": "x", "reviewers": ["rita"]}}, headers={"x-ms-client-principal": rita}))
    assert status == 201, view
    await get_runtime().service.drain()
    call_id = view["pending_requests"][0]["call_id"]
    before = await session_as("p", {"x-ms-client-principal": rita})
    answers = await _every_operation({"x-ms-client-principal": principal}, "p", call_id)
    if which in REFUSED_PRINCIPALS:
        for name, status, body in answers:
            if name not in ("decide_page", "decide_submit", "health", "openapi"):
                assert (status, body["title"], body["header"]) == (400, "Bad request", "x-ms-client-principal"), \
                    (name, body)
    assert await session_as("p", {"x-ms-client-principal": rita}) == before


async def session_as(session_id: str, headers: dict[str, str]) -> dict[str, Any]:
    status, view, _ = await call("get_session", http("GET", "/", route={"session_id": session_id}, headers=headers))
    assert status == 200, view
    assert isinstance(view, dict)
    return view


HOSTILE_DEV_HEADERS: dict[str, dict[str, str]] = {
    "user-non-ascii": {"x-hitl-user": "Zoë 日本語 🙂"},
    "user-not-utf8": {"x-hitl-user": "r\udce9ta"},
    "user-huge": {"x-hitl-user": "u" * 100_000},
    "user-controls": {"x-hitl-user": "a\x00b\x1b[31m"},
    "roles-huge": {"x-hitl-user": "rita", "x-hitl-roles": "admins," * 20_000},
    "roles-not-utf8": {"x-hitl-user": "rita", "x-hitl-roles": "adm\udcffins"},
    "forwarded-garbage": {"x-forwarded-for": "1.2.3.4, ,,,[::1]:x, 999.1.1.1, \u202e, unknown"},
    "forwarded-not-utf8": {"x-forwarded-for": "10.0.0.\udcff"},
    "forwarded-huge": {"x-forwarded-for": ",".join(["1.2.3.4"] * 50_000)},
    "content-type-not-utf8": {"content-type": "application/json\udcff"},
}


@pytest.mark.parametrize("headers", list(HOSTILE_DEV_HEADERS.values()), ids=list(HOSTILE_DEV_HEADERS))
async def test_hostile_dev_headers_never_fail_and_decide_nothing(runtime: InMemoryEventPublisher,
                                                                 headers: dict[str, str]) -> None:
    call_id = await pending_session("h")
    before = await session("h")
    answers = await _every_operation(headers, "h", call_id)
    broken = next((name for name, value in headers.items() if not is_text(value)), None)
    if broken is not None:  # a header that is not UTF-8 is named in a 400 (before anything reads it)
        for name, status, body in answers:
            if name not in ("decide_page", "decide_submit", "health", "openapi"):
                assert (status, body["title"], body["header"]) == (400, "Bad request", broken), (name, body)
                assert f"the {broken} header is not valid UTF-8 text" == body["detail"]
    await assert_unchanged(before, call_id)


@pytest.mark.parametrize(("content_type", "status", "title"), [
    ("application/json", 409, "Request not pending"),
    ("application/json; charset=utf-8", 409, "Request not pending"),
    ("APPLICATION/JSON", 409, "Request not pending"),
    ("application/merge-patch+json", 409, "Request not pending"),
    ("text/plain", 415, "Unsupported media type"),
    ("application/x-www-form-urlencoded", 415, "Unsupported media type"),
    ("multipart/form-data; boundary=x", 415, "Unsupported media type"),
    ("", 415, "Unsupported media type"),
    ("ünï/cödé", 415, "Unsupported media type"),
])
async def test_content_types(runtime: InMemoryEventPublisher, content_type: str, status: int, title: str) -> None:
    call_id = await pending_session("ct")
    before = await session("ct")
    headers = {**RITA, **({"content-type": content_type} if content_type else {})}
    got = await call("post_response", http("POST", "/", route={"session_id": "ct"}, headers=headers,
                                           raw=json.dumps({"call_id": "not-" + call_id, "result": {}}).encode()))
    problem_ = assert_problem(*got, status, title)
    if status == 415:
        media_type = content_type.split(";")[0].strip().lower()  # named without its parameters
        sent = json.dumps(media_type, ensure_ascii=False) if content_type else "a body without a content type"
        assert problem_["detail"] == f"send the body as application/json, not {sent}"
    await assert_unchanged(before, call_id)


def _tokens(valid: str) -> dict[str, str]:
    payload, signature = valid.split(".")
    return {
        "truncated": valid[:-7], "payload-only": payload, "half": valid[: len(valid) // 2],
        "tampered": payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature,
        "non-ascii": "é" + valid[1:], "non-ascii-signature": payload + ".sïgnature",
        "not-utf8": valid[:10] + "\udcff" + valid[11:], "huge": "A" * 100_000 + "." + signature,
        "nested-payload": base64.urlsafe_b64encode(b"[" * 100_000).decode().rstrip("=") + "." + signature,
        "empty": "", "dot": ".", "dots": "..", "three-parts": "a.b.c", "percent": "%ff%fe", "nul": "a\x00.b",
    }


@pytest.fixture
async def token_case(runtime: InMemoryEventPublisher) -> tuple[str, str]:
    call_id = await pending_session("tok")
    signer = get_runtime().service.signer
    assert signer is not None
    return call_id, signer.sign("tok", call_id, "rita")


TOKEN_NAMES = list(_tokens("payload.signature"))


@pytest.mark.parametrize("which", TOKEN_NAMES)
async def test_a_hostile_decision_link_token_never_fails_and_decides_nothing(token_case: tuple[str, str],
                                                                             which: str) -> None:
    call_id, valid = token_case
    token = _tokens(valid)[which]
    before = await session("tok")
    status, page, response = await call("decide_page", http("GET", "/api/decide", params={"token": token}))
    assert 400 <= status < 500 and response.mimetype == "text/html", (status, page)
    form = b"token=" + token.encode("utf-8", "surrogateescape") + b"&decision=approve&text=ok"
    status, page, response = await call("decide_submit", http(
        "POST", "/api/decide", raw=form, headers={"content-type": "application/x-www-form-urlencoded"}))
    assert 400 <= status < 500 and response.mimetype == "text/html", (status, page)
    await assert_unchanged(before, call_id)


@pytest.mark.parametrize(("params", "parameter"), [
    ({"limit": "²"}, None), ({"limit": "١٢"}, None), ({"limit": "-1"}, None), ({"limit": "9" * 5000}, None),
    ({"continuation": "é"}, None), ({"continuation": "\udcff"}, "continuation"), ({"workflow": "\udcff"}, "workflow"),
    ({"\udcff": "x"}, "\\udcff"),
])
async def test_hostile_query_parameters_get_a_400(runtime: InMemoryEventPublisher, params: dict[str, str],
                                                  parameter: str | None) -> None:
    status, body, response = await call("list_requests", http("GET", "/api/requests", params=params, headers=RITA))
    problem_ = assert_problem(status, body, response, 400, "Bad request")
    if parameter is not None:
        assert problem_["parameter"] == parameter and "is not valid UTF-8 text" in problem_["detail"]


async def test_a_route_parameter_that_is_not_text_gets_a_400(runtime: InMemoryEventPublisher) -> None:
    status, body, response = await call("get_session", http("GET", "/", route={"session_id": "s\udcff"},
                                                            headers=RITA))
    assert assert_problem(status, body, response, 400, "Bad request")["parameter"] == "session_id"


async def test_a_sign_in_link_with_a_caller_that_is_not_utf8_never_fails(runtime: InMemoryEventPublisher) -> None:
    call_id = await pending_session("link")
    signer = get_runtime().service.signer
    assert signer is not None
    token = signer.sign("link", call_id)  # no approver: the reader signs in and decides as themselves
    before = await session("link")
    status, _, _ = await call("decide_page", http("GET", "/api/decide", params={"token": token},
                                                  headers={"x-hitl-user": "r\udce9ta"}))
    assert 400 <= status < 500
    status, _, _ = await call("decide_submit", http(
        "POST", "/api/decide", raw=f"token={token}&decision=approve".encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "x-hitl-user": "r\udce9ta"}))
    assert 400 <= status < 500
    await assert_unchanged(before, call_id)


async def test_a_reviewer_name_longer_than_a_directory_id_never_fails(runtime: InMemoryEventPublisher) -> None:
    status, body, _ = await call("start_session", http(
        "POST", "/api/workflows/content-review/sessions", route={"workflow": "content-review"},
        body={"session_id": "long", "input": {"draft": "x", "reviewers": ["x" * 257]}}, headers=RITA))
    assert 400 <= status < 500, body
