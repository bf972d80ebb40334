"""HTTP API (route prefix /api): start, status, responses, inbox, cancel, audit, health.

Auth level FUNCTION (a function key in ``x-functions-key`` or ``?code=``) on every route except
``GET /api/health``, which is anonymous and reports only reachability. Who decides is checked
separately (Easy Auth principal / dev header) by the service.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import ValidationError

from ..views import ResponseBody, StartBody
from .identity import caller_from_request
from .problem import HttpProblem, from_error, ok, problem
from .runtime import get_runtime

bp = df.Blueprint()

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
MAX_STRING_CHARS = 100_000
_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_WORKFLOW = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")

Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


def check_id(value: str | None, name: str, pattern: re.Pattern[str] = _ID) -> str:
    if value is None or not pattern.fullmatch(value):
        raise HttpProblem(400, "Bad request", f"{name} must match {pattern.pattern}", field=name)
    return value


def read_json(req: func.HttpRequest, *, required: bool = True) -> Any:
    """The JSON body, or a precise problem: 413 too large, 415 not JSON, 400 malformed."""
    body = req.get_body() or b""
    if len(body) > MAX_BODY_BYTES:
        raise HttpProblem(413, "Payload too large", f"the body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    if not body:
        if required:
            raise HttpProblem(400, "Bad request", "a JSON body is required")
        return None
    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise HttpProblem(415, "Unsupported media type",
                          f"send the body as application/json, not {content_type or 'no content type'}")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HttpProblem(400, "Malformed JSON", f"the body is not valid JSON: {type(exc).__name__}") from None
    check_shape(value)
    return value


def check_shape(value: Any) -> None:
    """Refuse pathological JSON (deep nesting, huge strings) before it reaches a workflow."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise HttpProblem(422, "Invalid body", f"JSON nesting deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, str):
            if len(item) > MAX_STRING_CHARS:
                raise HttpProblem(422, "Invalid body", f"a string is longer than {MAX_STRING_CHARS} characters")
        elif isinstance(item, dict):
            for key, child in item.items():
                if len(key) > MAX_STRING_CHARS:
                    raise HttpProblem(422, "Invalid body", f"a key is longer than {MAX_STRING_CHARS} characters")
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _validate(model: Any, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise HttpProblem(422, "Invalid body", "the body does not match the expected shape", errors=errors) from None


async def guarded(req: func.HttpRequest, handler: Handler) -> func.HttpResponse:
    try:
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
        return ok(await get_runtime().service.get_session(session_id))

    return await guarded(req, handle)


@bp.route(route="sessions/{session_id}/responses", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def post_response(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest) -> func.HttpResponse:
        session_id = check_id(req.route_params.get("session_id"), "session_id")
        body: ResponseBody = _validate(ResponseBody, read_json(req))
        check_id(body.call_id, "call_id")
        rt = get_runtime()
        view = await rt.service.respond(session_id, body.call_id, body.result,
                                        caller=caller_from_request(req, rt.settings))
        return ok(view)

    return await guarded(req, handle)


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
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 200:
            raise HttpProblem(400, "Bad request", "limit must be a whole number from 1 to 200")
        continuation = req.params.get("continuation") or None
        if continuation is not None and len(continuation) > 512:
            raise HttpProblem(400, "Bad request", "continuation is longer than 512 characters")
        page = await get_runtime().service.inbox(workflow=workflow, assignee=assignee, continuation=continuation,
                                                 limit=int(limit_text))
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


@bp.route(route="sessions/{session_id}/audit", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def get_audit(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest) -> func.HttpResponse:
        session_id = check_id(req.route_params.get("session_id"), "session_id")
        verify = (req.params.get("verify") or "").lower() in ("1", "true", "yes")
        return ok(await get_runtime().service.audit(session_id, verify=verify))

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
