"""Schemathesis against the local host: generated requests from the OpenAPI document.

Fixed seed and bounded examples. Every response must conform to the document (status codes,
content types, bodies) and no request may produce a 5xx.

Every generated case (the coverage phase's cases stay as the document makes them) also carries
hostile values where the app reads input the document does not describe (:func:`hostile_case`):

* identity and origin headers, any subset of them — ``X-MS-CLIENT-PRINCIPAL`` (garbage, base64 of
  non-JSON, of deeply nested or huge JSON, of principals with wrongly typed claims),
  ``X-HITL-User`` / ``X-HITL-Roles`` (non-ASCII sent as UTF-8 and as Latin-1 bytes, long values),
  ``X-Forwarded-For`` (garbage lists). The principal is read only in ``easyauth`` mode, so the
  generated cases run a second time against a host in that mode;
* the decision-link ``token`` (query and form): signed for the known session, truncated,
  tampered, forged, non-ASCII, huge;
* request bodies under other content types: ``text/plain``, and raw bytes sent as ``+json``
  (repeated keys, ``NaN``/``Infinity``/``1e400``, unpaired surrogate escapes, deep nesting,
  UTF-16, 4301-digit integers).
"""

from __future__ import annotations

import base64
import collections
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st

import workflows
from hitl_core.links import LinkSigner
from hitl_core.openapi import openapi_document

from .host import LocalHost

RAW_JSON = "application/vnd.hitl.raw+json"
#: Values a client can put in a header through ``requests``: Latin-1 text, no CR/LF/NUL, not
#: starting or ending with whitespace (aiohttp refuses a header line over 8190 bytes with a 400).
_HEADER_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
_HEADER_MAX = 6000


def _header_safe(value: str) -> bool:
    return bool(value) and not value[0].isspace() and not value[-1].isspace() and len(value) <= _HEADER_MAX


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _wire_utf8(text: str) -> str:
    """``text`` as its UTF-8 bytes on the wire (``requests`` sends header values as Latin-1)."""
    return text.encode("utf-8").decode("latin-1")


_LATIN1_TEXT = st.text(_HEADER_CHARS, min_size=1, max_size=40)
_UNICODE_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Zl", "Zp"]),
                        min_size=1, max_size=30)
_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                        max_leaves=8)
_CLAIM = st.fixed_dictionaries({"typ": st.sampled_from(["name", "roles", "preferred_username", "groups", "appid"])
                                | _JSONISH, "val": st.text(max_size=20) | _JSONISH})

PRINCIPALS = st.one_of(
    _LATIN1_TEXT,  # not base64 at all
    st.binary(min_size=1, max_size=300).map(_b64),  # base64 of bytes that are not JSON
    st.integers(2, 4000).map(lambda n: _b64(b"[" * n + b"]" * n)),  # deeply nested JSON
    st.integers(2, 2000).map(lambda n: _b64(json.dumps({"claims": [{"typ": "roles", "val": "r"}] * n}).encode())),
    _JSONISH.map(lambda v: _b64(json.dumps(v).encode())),  # JSON that is not a principal
    st.fixed_dictionaries({"claims": st.lists(_CLAIM, max_size=5) | _JSONISH, "name_typ": _JSONISH,
                           "role_typ": _JSONISH}).map(lambda v: _b64(json.dumps(v).encode())),
    _UNICODE_TEXT.map(lambda name: _b64(json.dumps({"claims": [{"typ": "name", "val": name}]}).encode())),
    st.just(_b64(b'{"claims": NaN}')), st.just(_b64(b"\xff\xfe{}")),
).filter(_header_safe)

USERS = st.one_of(
    _UNICODE_TEXT.map(_wire_utf8),  # non-ASCII as UTF-8 (what a client means by it)
    _LATIN1_TEXT,  # non-ASCII as Latin-1 bytes: not UTF-8 (the local host reads them as surrogates)
    st.integers(257, 5000).map(lambda n: "u" * n),
    st.sampled_from(["amy", "AMY", "system", "role:admins", "user:amy", "amy@example.com"]),
).filter(_header_safe)

ROLES = st.one_of(
    st.lists(st.sampled_from(["admins", "auditors", "", " ", "finance", "role:admins"]) | _LATIN1_TEXT,
             max_size=5).map(",".join),
    st.integers(2, 2000).map(lambda n: ",".join(["admins"] * n)),
).filter(_header_safe)

FORWARDED = st.one_of(
    st.lists(st.sampled_from(["10.0.0.1", "::1", "[2001:db8::1]:443", "1.2.3.4:80", "256.1.1.1", "unknown", "",
                              "_hidden", "::ffff:1.2.3.4", "1.2.3.4%eth0"]) | _LATIN1_TEXT, min_size=1,
             max_size=6).map(", ".join),
    st.integers(1, 1500).map(lambda n: ",".join(["1.2.3.4"] * n)),
).filter(_header_safe)

#: Tokens signed with the fuzz host's key for the known session (filled in once the host runs).
SIGNED_TOKENS: list[str] = []


def _signed(index: int) -> str:
    return SIGNED_TOKENS[index % len(SIGNED_TOKENS)] if SIGNED_TOKENS else "not.signed"


_SIGNED = st.integers(0, 63).map(_signed)
TOKENS = st.one_of(
    _SIGNED,
    st.tuples(_SIGNED, st.integers(1, 80)).map(lambda t: t[0][:-t[1]]),  # truncated
    st.tuples(_SIGNED, st.integers(0, 40), _LATIN1_TEXT).map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + 1:]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40),  # non-ASCII, anything
    st.integers(100, 6000).map(lambda n: "A" * n + "." + "B" * 43),  # huge
    st.integers(2, 3000).map(lambda n: base64.urlsafe_b64encode(b"[" * n).decode().rstrip("=") + ".x"),
    st.sampled_from(["", ".", "..", "a.b.c", "é.é", "%ff", "\u202e"]),
)


def _raw_json(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    keys = st.sampled_from(["call_id", "result", "approved", "feedback", "comment", "input", "draft", "session_id",
                            "a"]) | st.text(max_size=6)
    members = st.lists(st.tuples(keys, children), max_size=4)
    objects = members.map(lambda ms: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in ms) + "}")
    repeated = st.tuples(keys, children, children).map(lambda t: f'{{"{t[0]}":{t[1]},"{t[0]}":{t[2]}}}')
    return objects | repeated | st.lists(children, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")


_LITERALS = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "0.1", "true",
                             "null", '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"x"', "9" * 4301,
                             "123456789012345678901234567890"])
RAW_BODIES = st.one_of(
    st.recursive(_LITERALS | st.text(max_size=12).map(json.dumps), _raw_json, max_leaves=12).map(str.encode),
    st.sampled_from([b'{"call_id":"c","call_id":"d","result":{"approved":true}}',
                     b'{"input":{"draft":"x","draft":"y"}}', b'{"input":{"draft":"x"},"input":{"draft":"y"}}',
                     b'{"call_id":"c","result":{"approved":true,"approved":false}}',
                     b'{"input":{"draft":"x"}}'.decode().encode("utf-16"), b"\xef\xbb\xbf{}", b"\xff\xfe",
                     b'{"input":{"employee":"e","amount":1e400,"currency":"EUR","description":"d"}}',
                     b'{"input":{"employee":"e","amount":NaN,"currency":"EUR","description":"d"}}']),
    st.integers(30, 5000).map(lambda n: b"[" * n + b"]" * n),
)

schemathesis.openapi.media_type(RAW_JSON, RAW_BODIES)

DOCUMENT = openapi_document({s.name: s.input_model for s in workflows.ALL})
schema = schemathesis.openapi.from_dict(DOCUMENT)
#: What the issue asks of every response: no 5xx, and conformance to the document. (Positive-data
#: acceptance does not apply: a decision's result is validated against the response type of the
#: request it answers, which the document cannot know in advance.)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]
FUZZ_CASES: list[str] = []
#: What the hostile additions put into generated cases (header names, "token", "body:<media type>").
HOSTILE_USED: list[str] = []

#: Headers the app reads that the document does not describe (the hosting platform or the dev
#: host sets them); each generated case carries any subset of them.
HOSTILE_HEADERS = st.fixed_dictionaries({}, optional={
    "X-MS-CLIENT-PRINCIPAL": PRINCIPALS, "X-HITL-User": USERS, "X-HITL-Roles": ROLES, "X-Forwarded-For": FORWARDED,
})
#: The same operation's body under another content type: raw JSON-ish bytes the parser must
#: refuse precisely, or plain text.
OTHER_BODIES = st.one_of(st.none(), st.tuples(st.just(RAW_JSON), RAW_BODIES),
                         st.tuples(st.just("text/plain"), st.text(max_size=50)))


@schema.hook("flatmap_case")
def hostile_case(context: Any, case: Any) -> st.SearchStrategy[Any]:
    """Every generated (not coverage) case, with hostile values where the document says nothing."""
    decide = case.path == "/api/decide"
    has_json_body = "application/json" in (case.operation.definition.raw.get("requestBody") or {}).get("content", {})
    return st.tuples(HOSTILE_HEADERS, st.none() | TOKENS if decide else st.none(),
                     OTHER_BODIES if has_json_body else st.none()).map(lambda drawn: _with_hostile(case, *drawn))


def _with_hostile(case: Any, headers: dict[str, str], token: str | None, body: tuple[str, Any] | None) -> Any:
    case.headers = {**(case.headers or {}), **headers}
    HOSTILE_USED.extend(headers)
    if token is not None:
        if case.method == "GET":
            case.query = {**(case.query or {}), "token": token}
        elif isinstance(case.body, dict):
            case.body = {**case.body, "token": token}
        HOSTILE_USED.append("token")
    if body is not None:
        case.media_type, case.body = body
        HOSTILE_USED.append(f"body:{body[0]}")
    return case


def _seed_session(host: LocalHost) -> None:
    """Something to find: a pending session; and decision-link tokens signed with the host's key."""
    principal = _b64(json.dumps({"claims": [{"typ": "name", "val": "fuzz-starter"}]}).encode())
    with host.client() as client:
        started = client.post("/api/workflows/content-review/sessions",
                              json={"session_id": "fuzz-known", "input": {"draft": "seed", "reviewers": ["amy"]}},
                              headers={"X-HITL-User": "fuzz-starter", "X-MS-CLIENT-PRINCIPAL": principal})
        assert started.status_code == 201, started.text
        call_id = started.json()["pending_requests"][0]["call_id"]
    keys = sorted(host.data_dir.rglob("link-signing.key"))
    SIGNED_TOKENS.clear()
    if keys:
        signer = LinkSigner([keys[0].read_text().strip()], ttl_seconds=3600)
        SIGNED_TOKENS.extend(signer.sign("fuzz-known", call_id, approver) for approver in ("amy", None, "mallory"))
        SIGNED_TOKENS.append(signer.sign("fuzz-missing", call_id, "amy"))


def _host(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Iterator[LocalHost]:
    # No directory: any name the caller signs in with is a person (the demo directory is for `make run`).
    host = LocalHost(Path(tmp_path_factory.mktemp(f"fuzz-{mode}")) / "data",
                     {"HITL_AUTH_MODE": mode, "HITL_DIRECTORY": "none"})
    host.start()
    try:
        _seed_session(host)
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="module")
def fuzz_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    """The local host as `make run` serves it: callers named by X-HITL-User."""
    yield from _host(tmp_path_factory, "dev")


@pytest.fixture(scope="module")
def easyauth_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    """The same app reading callers from X-MS-CLIENT-PRINCIPAL, as in Azure."""
    yield from _host(tmp_path_factory, "easyauth")


def _check(case: Any, host: LocalHost) -> None:
    FUZZ_CASES.append(f"{case.method} {case.path}")
    response = case.call(base_url=host.base, timeout=30)
    assert response.status_code < 500, (f"{case.method} {case.formatted_path} (headers {case.headers}) -> "
                                        f"{response.status_code}: {response.text}")
    case.validate_response(response, checks=CHECKS)


@schema.parametrize()
@seed(20261125)
@settings(max_examples=30, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_fails(case: Any, fuzz_host: LocalHost) -> None:
    _check(case, fuzz_host)


@schema.parametrize()
@seed(20261126)
@settings(max_examples=6, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_api_never_fails_with_easy_auth(case: Any, easyauth_host: LocalHost) -> None:
    """The principal header is read only in easyauth mode: generated cases again, against that host."""
    _check(case, easyauth_host)


def test_fuzzing_ran_enough_cases() -> None:
    """Runs after the generated tests (file order): the run must not have been vacuous — every
    operation of the document (decision links included) ran, and so did each hostile addition."""
    used = collections.Counter(HOSTILE_USED)
    print(f"\nfuzz cases run: {len(FUZZ_CASES)}; hostile additions: {dict(used)}")
    assert len(FUZZ_CASES) >= 100
    operations = {f"{method.upper()} {path}" for path, item in DOCUMENT["paths"].items() for method in item}
    assert operations <= set(FUZZ_CASES)
    for addition in ("X-MS-CLIENT-PRINCIPAL", "X-HITL-User", "X-HITL-Roles", "X-Forwarded-For", "token",
                     f"body:{RAW_JSON}", "body:text/plain"):
        assert used[addition] >= 10, addition
