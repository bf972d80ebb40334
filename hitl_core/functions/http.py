"""HTTP API (route prefix /api): start, status, responses, inbox, cancel, audit, health.

Auth level FUNCTION (a function key in ``x-functions-key`` or ``?code=``) on every route except
``GET /api/health``, which is anonymous and reports only reachability. Who decides is checked
separately (Easy Auth principal / dev header) by the service.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import ValidationError

from ..access import Caller
from ..delegation import DelegationBody
from ..errors import error_summary, json_text
from ..settings import Settings
from ..views import ResponseBody, StartBody
from . import identity
from .problem import HttpProblem, from_error, ok, problem
from .runtime import get_runtime

bp = df.Blueprint()

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
MAX_STRING_CHARS = 100_000
_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_WORKFLOW = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")
#: A person as a route value: a directory id or an e-mail address.
_PERSON = re.compile(r"^[A-Za-z0-9._@+\-]{1,256}$")

Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


def check_id(value: str | None, name: str, pattern: re.Pattern[str] = _ID) -> str:
    if value is None or not pattern.fullmatch(value):
        raise HttpProblem(400, "Bad request", f"{name} must match {pattern.pattern}", field=name)
    return value


#: The request headers the adapter and the identity module read (their values must be text).
READ_HEADERS = ("content-type", "x-ms-client-principal", "x-hitl-user", "x-hitl-roles", "x-forwarded-for",
                "x-client-ip", "x-hitl-client-ip")


def _is_text(value: str) -> bool:
    """False for a string with lone surrogates: bytes that were not UTF-8 (a host decodes them with
    ``surrogateescape``) or a JSON ``\\ud800`` escape. Such a string cannot be stored or answered."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(text: str, limit: int = 80) -> str:
    """A caller's value quoted in a problem: valid text, at most ``limit`` characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "…"


def check_text(req: func.HttpRequest) -> None:
    """Refuse header, query and route values that are not text (400) before anything reads them."""
    for name in READ_HEADERS:
        value = req.headers.get(name)
        if value is not None and not _is_text(value):
            raise HttpProblem(400, "Bad request", f"the {name} header is not valid UTF-8 text", header=name)
    for kind, params in (("query", req.params), ("route", req.route_params)):
        for key, value in params.items():
            if not (_is_text(key) and _is_text(value)):
                raise HttpProblem(400, "Bad request",
                                  f"the {kind} parameter {json_text(_shown(key))} is not valid UTF-8 text",
                                  parameter=_shown(key))


def caller_from_request(req: func.HttpRequest, settings: Settings, **kwargs: Any) -> Caller:
    """The caller :func:`identity.caller_from_request` reads, refused with a 400 when what it names is not
    text: an Easy Auth principal is base64 (so :func:`check_text` passes it) and may carry ``\\ud800``."""
    caller = identity.caller_from_request(req, settings, **kwargs)
    for value in (caller.user, caller.source, *caller.roles):
        if isinstance(value, str) and not _is_text(value):
            header = "x-ms-client-principal" if settings.auth_mode == "easyauth" else "x-hitl-user"
            raise HttpProblem(400, "Bad request", f"the {header} header names a caller that is not valid Unicode",
                              header=header)
    return caller


def read_json(req: func.HttpRequest, *, required: bool = True) -> Any:
    """The JSON body, or a precise problem: 413 too large, 415 not JSON, 400 malformed or ambiguous
    (a repeated key), 422 a value hitl refuses (non-finite number, deep nesting, huge or broken string)."""
    body = req.get_body() or b""
    if len(body) > MAX_BODY_BYTES:
        raise HttpProblem(413, "Payload too large", f"the body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    if not body:
        if required:
            raise HttpProblem(400, "Bad request", "a JSON body is required")
        return None
    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        sent = json_text(_shown(content_type)) if content_type else "a body without a content type"
        raise HttpProblem(415, "Unsupported media type", f"send the body as application/json, not {sent}")
    return parse_json(body)


class _NonFinite:
    """Where a ``NaN``, ``Infinity`` or ``-Infinity`` literal stood (Python accepts them; JSON has none)."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _RepeatedKeys(dict[str, Any]):
    """A parsed JSON object that named ``key`` more than once."""

    key: str = ""


def parse_json(body: bytes | str) -> Any:
    """Strict JSON: a repeated key in any object is a 400 (which value was meant is not guessed, so
    no "last one wins"); ``NaN``/``Infinity`` and numbers that overflow to infinity (``1e400``) are a
    422 naming where they are; so are the shapes :func:`check_shape` refuses."""
    repeated: list[_RepeatedKeys] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        flagged = _RepeatedKeys(obj)
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                flagged.key = key
                break
            seen.add(key)
        repeated.append(flagged)
        return flagged

    try:
        value = json.loads(body, object_pairs_hook=pairs_hook, parse_constant=_NonFinite)
    except json.JSONDecodeError as exc:
        raise HttpProblem(400, "Malformed JSON", f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, "
                                                 f"column {exc.colno}") from None
    except UnicodeDecodeError:
        raise HttpProblem(400, "Malformed JSON", "the body is not valid JSON: it is not UTF-8 text") from None
    except RecursionError:
        raise HttpProblem(400, "Malformed JSON", "the body is not valid JSON hitl can read: it is nested too deeply"
                          ) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise HttpProblem(400, "Malformed JSON", f"the body is not valid JSON hitl can read: {exc}") from None
    if repeated:
        for item, path in _walk(value):
            if isinstance(item, _RepeatedKeys):
                where = f"the object at {_pointer(path)}" if path else "the top-level object"
                raise HttpProblem(400, "Duplicate key",
                                  f"{where} has the key {json_text(_shown(item.key, 200))} more than once; send each "
                                  "key once (which of the values was meant is not guessed)",
                                  key=_shown(item.key, 200), pointer=_pointer(path))
    check_shape(value)
    return value


#: A location in a JSON value, as a linked list (parent, key) so a walk copies nothing; None: the root.
_Path = tuple[Any, str | int] | None


def _parts(path: _Path) -> list[str | int]:
    parts: list[str | int] = []
    while path is not None:
        path, key = path
        parts.append(key)
    return parts[::-1]


def _pointer(path: _Path) -> str:
    """The JSON Pointer (RFC 6901) of ``path``: ``/result/approved``; ``""`` is the whole body."""
    parts = (str(p).encode("utf-8", "backslashreplace").decode("utf-8") for p in _parts(path))
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _walk(value: Any) -> Iterator[tuple[Any, _Path]]:
    """Every value inside ``value`` with its path and depth, in document order (iterative: no recursion)."""
    stack: list[tuple[Any, _Path]] = [(value, None)]
    while stack:
        item, path = stack.pop()
        yield item, path
        if isinstance(item, dict):
            stack.extend((child, (path, key)) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((item[i], (path, i)) for i in range(len(item) - 1, -1, -1))


def _refused(path: _Path, detail: str, msg: str, kind: str) -> HttpProblem:
    """422 for the value at ``path``; ``detail`` names it with ``{where}``, ``msg`` says what is wrong."""
    where = f"at {_pointer(path)}" if path else "at the top level"
    return HttpProblem(422, "Invalid body", detail.format(where=where), pointer=_pointer(path),
                       errors=[{"loc": _parts(path), "msg": msg, "type": kind}])


def check_shape(value: Any) -> None:
    """Refuse JSON hitl will not store (deep nesting, huge strings, strings that are not Unicode,
    non-finite numbers) before it reaches a workflow, naming where (a JSON Pointer)."""
    stack: list[tuple[Any, int, _Path]] = [(value, 1, None)]
    while stack:
        item, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            msg = f"JSON nesting deeper than {MAX_JSON_DEPTH} levels"
            raise _refused(path, msg + " {where}", msg, "json_too_deep")
        if isinstance(item, str):
            if len(item) > MAX_STRING_CHARS:
                msg = f"a string is longer than {MAX_STRING_CHARS} characters"
                raise _refused(path, "the string {where} is longer than " f"{MAX_STRING_CHARS} characters", msg,
                               "string_too_long")
            if not _is_text(item):
                raise _refused(path, "the string {where} is not valid Unicode (it has an unpaired surrogate)",
                               "a string is not valid Unicode", "string_unicode")
        elif isinstance(item, _NonFinite):
            raise _refused(path, "the number {where} is " f"{item.literal}; JSON numbers must be finite",
                           f"{item.literal} is not a JSON number", "finite_number")
        elif isinstance(item, float) and not math.isfinite(item):
            raise _refused(path, "the number {where} overflows to infinity; JSON numbers must be finite "
                                 "(at most about 1.8e308 in magnitude)",
                           "the number overflows to infinity", "finite_number")
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if len(key) > MAX_STRING_CHARS:
                    raise _refused(path, "a key of the object {where} is longer than " f"{MAX_STRING_CHARS} "
                                   "characters", f"a key is longer than {MAX_STRING_CHARS} characters",
                                   "string_too_long")
                if not _is_text(key):
                    raise _refused(path, f"the key {json_text(_shown(key))} of the object " "{where} is not valid "
                                   "Unicode (it has an unpaired surrogate)", "a key is not valid Unicode",
                                   "string_unicode")
                stack.append((child, depth + 1, (path, key)))
        elif isinstance(item, list):
            stack.extend((item[i], depth + 1, (path, i)) for i in range(len(item) - 1, -1, -1))


def _validate(model: Any, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise HttpProblem(422, "Invalid body", f"the body does not match the expected shape: {error_summary(errors)}",
                          errors=errors) from None


async def guarded(req: func.HttpRequest, handler: Handler) -> func.HttpResponse:
    try:
        check_text(req)
        return await handler(req)
    except Exception as exc:  # every failure becomes a precise problem response
        return from_error(exc)


@bp.route(route="workflows/{workflow}/sessions", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def start_session(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest) -> func.HttpResponse:
        workflow = check_id(req.route_params.get("workflow"), "workflow", _WORKFLOW)
        body: StartBody = _validate(StartBody, read_json(req))
        rt = get_runtime()
        result = await rt.service.start(workflow, input=body.input, session_id=body.session_id,
                                        caller=caller_from_request(req, rt.settings))
        return ok(result.session, status=201 if result.created else 200)

    return await guarded(req, handle)


@bp.route(route="sessions/{session_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def get_session(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest) -> func.HttpResponse:
        session_id = check_id(req.route_params.get("session_id"), "session_id")
        rt = get_runtime()
        return ok(await rt.service.get_session(session_id, caller=caller_from_request(req, rt.settings)))

    return await guarded(req, handle)


@bp.route(route="sessions/{session_id}/responses", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def post_response(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest) -> func.HttpResponse:
        session_id = check_id(req.route_params.get("session_id"), "session_id")
        body: ResponseBody = _validate(ResponseBody, read_json(req))
        check_id(body.call_id, "call_id")
        rt = get_runtime()
        view = await rt.service.respond(session_id, body.call_id, body.result,
                                        caller=caller_from_request(req, rt.settings), on_behalf_of=body.on_behalf_of)
        return ok(view)

    return await guarded(req, handle)


def _instant(text: str | None, name: str) -> dt.datetime | None:
    """An ISO 8601 instant from a query parameter; it must name its time zone (a bare local time is
    ambiguous, and every stored time is UTC)."""
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text) if len(text) <= 64 else None
        moment = moment.astimezone(dt.UTC) if moment is not None and moment.tzinfo is not None else None
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved out of range by its offset
        moment = None
    if moment is None:
        raise HttpProblem(400, "Bad request", f"{name} must be an ISO 8601 time with a time zone, "
                                              "e.g. 2026-12-01T09:00:00Z")
    return moment


@bp.route(route="requests", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def list_requests(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest) -> func.HttpResponse:
        status = req.params.get("status", "pending")
        if status != "pending":
            raise HttpProblem(400, "Bad request", "only status=pending is supported by the inbox")
        workflow = req.params.get("workflow") or None
        if workflow is not None:
            check_id(workflow, "workflow", _WORKFLOW)
        assignee = req.params.get("assignee") or None
        if assignee is not None and len(assignee) > 256:
            raise HttpProblem(400, "Bad request", "assignee is longer than 256 characters")
        limit_text = req.params.get("limit", "50")
        if not re.fullmatch(r"[0-9]{1,3}", limit_text) or not 1 <= int(limit_text) <= 200:
            raise HttpProblem(400, "Bad request", "limit must be a whole number from 1 to 200")
        continuation = req.params.get("continuation") or None
        if continuation is not None and len(continuation) > 512:
            raise HttpProblem(400, "Bad request", "continuation is longer than 512 characters")
        scope = req.params.get("scope", "mine")
        if scope not in ("mine", "all"):
            raise HttpProblem(400, "Bad request", "scope must be mine (what I may decide) or all (admins, auditors)")
        claimed = req.params.get("claimed") or None
        if claimed not in (None, "me"):
            raise HttpProblem(400, "Bad request", "claimed must be me (the requests the caller has claimed)")
        due_before = _instant(req.params.get("due_before") or None, "due_before")
        count = req.params.get("count", "false")
        if count not in ("true", "false"):
            raise HttpProblem(400, "Bad request", "count must be true or false")
        rt = get_runtime()
        caller = caller_from_request(req, rt.settings)
        claimed_by = None
        if claimed == "me":
            claimed_by = (await rt.service.access.identify(caller)).person_id
            if claimed_by is None:
                raise HttpProblem(400, "Bad request", "claimed=me needs a caller who is a person of the directory")
        page = await rt.service.inbox(workflow=workflow, assignee=assignee, continuation=continuation,
                                      limit=int(limit_text), caller=caller, scope=scope, claimed_by=claimed_by,
                                      due_before=due_before, count=count == "true")
        return ok(page)

    return await guarded(req, handle)


@bp.route(route="sessions/{session_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def cancel_session(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest) -> func.HttpResponse:
        session_id = check_id(req.route_params.get("session_id"), "session_id")
        read_json(req, required=False)
        rt = get_runtime()
        return ok(await rt.service.cancel(session_id, caller=caller_from_request(req, rt.settings)))

    return await guarded(req, handle)


async def _claim(req: func.HttpRequest, *, release: bool) -> func.HttpResponse:
    async def handle(req: func.HttpRequest) -> func.HttpResponse:
        session_id = check_id(req.route_params.get("session_id"), "session_id")
        call_id = check_id(req.route_params.get("call_id"), "call_id")
        read_json(req, required=False)
        rt = get_runtime()
        caller = caller_from_request(req, rt.settings)
        return ok(await rt.service.claim(session_id, call_id, caller=caller, release=release))

    return await guarded(req, handle)


@bp.route(route="sessions/{session_id}/requests/{call_id}/claim", methods=["POST"],
          auth_level=func.AuthLevel.FUNCTION)
async def claim_request(req: func.HttpRequest) -> func.HttpResponse:
    return await _claim(req, release=False)


@bp.route(route="sessions/{session_id}/requests/{call_id}/release", methods=["POST"],
          auth_level=func.AuthLevel.FUNCTION)
async def release_request(req: func.HttpRequest) -> func.HttpResponse:
    return await _claim(req, release=True)


@bp.route(route="delegations/{user}", methods=["GET", "PUT", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
async def delegations(req: func.HttpRequest) -> func.HttpResponse:
    """A person's out-of-office delegation: GET reads it (and those made to them), PUT sets it, DELETE ends it."""
    async def handle(req: func.HttpRequest) -> func.HttpResponse:
        user = check_id(req.route_params.get("user"), "user", _PERSON)
        rt = get_runtime()
        caller = caller_from_request(req, rt.settings)
        service = rt.service.delegations
        if req.method == "PUT":
            body: DelegationBody = _validate(DelegationBody, read_json(req))
            return ok(await service.put(user, body, caller))
        if req.method == "DELETE":
            read_json(req, required=False)
            return ok(await service.end(user, caller))
        return ok(await service.get(user, caller))

    return await guarded(req, handle)


@bp.route(route="sessions/{session_id}/audit", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def get_audit(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest) -> func.HttpResponse:
        session_id = check_id(req.route_params.get("session_id"), "session_id")
        verify = (req.params.get("verify") or "").lower() in ("1", "true", "yes")
        rt = get_runtime()
        return ok(await rt.service.audit(session_id, verify=verify, caller=caller_from_request(req, rt.settings)))

    return await guarded(req, handle)


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def openapi(req: func.HttpRequest) -> func.HttpResponse:
    from ..openapi import openapi_document

    specs = get_runtime().service.specs
    return ok(openapi_document({name: spec.input_model for name, spec in specs.items()}))


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    try:
        view = await get_runtime().service.health()
    except Exception:
        return problem(503, "Service unavailable", "not ready", headers={"Retry-After": "5"})
    if view.status == "ok":
        return ok(view)
    response = ok(view, status=503)
    response.headers["Retry-After"] = "5"
    return response
