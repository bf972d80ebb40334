"""The OpenAPI 3.1 document of the HTTP API, generated from the pydantic view models.

Nothing here is hand-written JSON Schema: request and response bodies are the models in
:mod:`hitl_core.views` (the same ones the adapter validates with and serialises from), and the
problem responses share one ``Problem`` schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .delegation import DelegationBody, DelegationsView, DelegationView
from .views import AuditView, HealthView, InboxPage, RequestView, ResponseBody, SessionView, StartBody

ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
WORKFLOW_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,63}$"
PERSON_PATTERN = r"^[A-Za-z0-9._@+\-]{1,256}$"


class Problem(BaseModel):
    """application/problem+json (RFC 9457) with hitl's extra members."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _pages(codes: dict[int, str]) -> dict[str, Any]:
    """Decision-link answers: small HTML pages (``codes``: status -> when)."""
    return {str(code): {"description": why} if 300 <= code < 400 else
            {"description": why, "content": {"text/html": {"schema": {"type": "string"}}}}
            for code, why in codes.items()}


def _problems(*codes: int) -> dict[str, Any]:
    reasons = {400: "Malformed request", 403: "The caller may not do this", 404: "Not found", 409: "Conflict",
               413: "Body over 1 MiB", 415: "Body is not JSON", 422: "Body fails the schema",
               503: "Storage unavailable; retry after Retry-After"}
    return {str(c): {"description": reasons[c], "content": {"application/problem+json": {"schema": _ref(Problem)}}}
            for c in codes}


def _path_param(name: str, pattern: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": pattern}}


def _start_body(name: str, input_model: type[BaseModel]) -> type[BaseModel]:
    """``{"session_id"?, "input": <the workflow's input model>}`` as a model of its own."""
    return create_model(
        f"Start{input_model.__name__}",
        __config__=ConfigDict(extra="forbid"),
        session_id=(str | None, StartBody.model_fields["session_id"]),
        input=(input_model, ...),
    )


def _app_pages(session_id: dict[str, Any]) -> dict[str, Any]:
    """The reviewer app (``/api/app``): HTML pages for people, not an API; listed so every route is known."""
    call_id = _path_param("call_id", ID_PATTERN)
    signed_in = {200: "The page", 303: "Not signed in: to the sign-in page", 404: "Not found, or not yours to see"}
    posted = {303: "Done: back to the page", 403: "Not allowed, or the form's CSRF token is stale",
              409: "Decided or claimed by someone else meanwhile (the page says by whom)",
              422: "An answer needs attention (shown next to its field); nothing recorded"}

    def op(name: str, summary: str, codes: dict[int, str], *params: dict[str, Any]) -> dict[str, Any]:
        return {"operationId": name, "summary": summary, "security": [], "parameters": list(params),
                "responses": _pages(codes)}

    form = {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}
    return {
        "/api/app": {"get": op("appHome", "The reviewer app: to the inbox", {303: "To /api/app/inbox"})},
        "/api/app/inbox": {"get": op("appInbox", "What I may decide now (filters: workflow, due=soon, "
                                                 "claimed=me; paged)", signed_in)},
        "/api/app/sessions/{session_id}/requests/{call_id}": {
            "get": op("appRequest", "A request: its data, who decides, votes, the decision form", signed_in,
                      session_id, call_id),
            "post": {**op("appDecide", "Answer through the form", {**signed_in, **posted}, session_id, call_id),
                     "requestBody": {"required": True, "content": form}}},
        "/api/app/sessions/{session_id}/requests/{call_id}/claim": {"post": {
            **op("appClaim", "Claim or release (action=claim|release)", {**posted, 404: signed_in[404]},
                 session_id, call_id),
            "requestBody": {"required": True, "content": form}}},
        "/api/app/sessions/{session_id}": {"get": op("appSession", "A session and its verified audit trail",
                                                     signed_in, session_id)},
        "/api/app/history": {"get": op("appHistory", "Sessions I started or acted on", signed_in)},
        "/api/app/delegation": {
            "get": op("appDelegation", "My out-of-office delegate", signed_in),
            "post": {**op("appSetDelegation", "Set or end my delegate", {**signed_in, **posted}),
                     "requestBody": {"required": True, "content": form}}},
        "/api/app/signin": {
            "get": op("appSignIn", "Local development: pick who you are (Azure: App Service Authentication)",
                      {200: "People of the directory", 303: "Under easyauth: to /.auth/login/aad"}),
            "post": {**op("appSignInAs", "Local development: sign in as a person of the directory",
                          {303: "Signed in", 422: "Not a person of the directory"}),
                     "requestBody": {"required": True, "content": form}}},
        "/api/app/signout": {"post": op("appSignOut", "Sign out", {303: "Signed out"})},
        "/api/app/static/{name}": {"get": {
            **op("appStatic", "The app's stylesheet and script", {}, _path_param("name", r"^app\.(css|js)$")),
            "responses": {"200": {"description": "The file", "content": {
                              "text/css": {"schema": {"type": "string"}},
                              "text/javascript": {"schema": {"type": "string"}}}},
                          "404": {"description": "No such file",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }


def openapi_document(workflows: Mapping[str, type[BaseModel]], *, server_url: str = "/") -> dict[str, Any]:
    """The API description for a deployment: ``workflows`` maps each workflow to its input model.

    Each workflow gets its own start path whose body schema is generated from its input model,
    so generated clients (and fuzzers) know exactly what a valid start looks like.
    """
    start_bodies = {name: _start_body(name, model) for name, model in sorted(workflows.items())}
    inputs: list[type[BaseModel]] = [ResponseBody, DelegationBody, *start_bodies.values()]
    outputs: list[type[BaseModel]] = [SessionView, RequestView, InboxPage, AuditView, HealthView, DelegationView,
                                      DelegationsView, Problem]
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in inputs]
    modes += [(m, "serialization") for m in outputs]
    _, defs = models_json_schema(modes, ref_template="#/components/schemas/{model}")
    schemas = defs.get("$defs", {})
    session_id = _path_param("session_id", ID_PATTERN)
    user = _path_param("user", PERSON_PATTERN)
    body_errors = (400, 413, 415, 422)
    key: list[dict[str, list[str]]] = [{"functionKey": []}]
    paths: dict[str, Any] = {
        f"/api/workflows/{name}/sessions": {"post": {
            "operationId": f"start_{name.replace('-', '_')}",
            "summary": f"Start a {name} session (idempotent per session_id and input)",
            "security": key,
            "requestBody": {"required": True, "content": _json(body)},
            "responses": {"201": {"description": "Started", "content": _json(SessionView)},
                          "200": {"description": "Same session_id and input: the existing session",
                                  "content": _json(SessionView)},
                          **_problems(403, 409, 503, *body_errors)}}}
        for name, body in start_bodies.items()
    }
    paths.update({
        "/api/sessions/{session_id}": {"get": {
            "operationId": "getSession", "summary": "Session view", "parameters": [session_id], "security": key,
            "responses": {"200": {"description": "The session", "content": _json(SessionView)},
                          **_problems(400, 404, 503)}}},
        "/api/sessions/{session_id}/responses": {"post": {
            "operationId": "respond", "summary": "Decide a pending request; resumes the session exactly once",
            "parameters": [session_id], "security": key,
            "requestBody": {"required": True, "content": _json(ResponseBody)},
            "responses": {"200": {"description": "The session after the decision", "content": _json(SessionView)},
                          **_problems(403, 404, 409, 503, *body_errors)}}},
        "/api/requests": {"get": {
            "operationId": "inbox", "security": key,
            "summary": "Reviewer inbox of pending requests: nearest deadline first, then oldest",
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["pending"]}},
                {"name": "workflow", "in": "query", "schema": {"type": "string", "pattern": WORKFLOW_PATTERN}},
                {"name": "assignee", "in": "query", "schema": {"type": "string", "maxLength": 256}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                {"name": "continuation", "in": "query", "schema": {"type": "string", "maxLength": 512}},
                {"name": "scope", "in": "query", "schema": {"type": "string", "enum": ["mine", "all"]},
                 "description": "mine: what the caller may decide (default); all: every pending request "
                                "(admins and auditors)"},
                {"name": "claimed", "in": "query", "schema": {"type": "string", "enum": ["me"]},
                 "description": "me: only the requests the caller holds a live claim on"},
                {"name": "due_before", "in": "query", "schema": {"type": "string", "format": "date-time",
                                                                 "maxLength": 64},
                 "description": "only requests whose deadline is before this instant (with a time zone)"},
                {"name": "count", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]},
                 "description": "true: add total, the number of matching requests over all pages"},
            ],
            "responses": {"200": {"description": "A page", "content": _json(InboxPage)},
                          **_problems(400, 403, 503)}}},
        "/api/sessions/{session_id}/cancel": {"post": {
            "operationId": "cancel", "summary": "Cancel; pending requests end as cancelled",
            "parameters": [session_id], "security": key,
            "responses": {"200": {"description": "Cancelled", "content": _json(SessionView)},
                          **_problems(403, 404, 409, 503, *body_errors)}}},
        "/api/sessions/{session_id}/requests/{call_id}/claim": {"post": {
            "operationId": "claim", "summary": "Claim a pending request for HITL_CLAIM_SECONDS (renewable)",
            "parameters": [session_id, _path_param("call_id", ID_PATTERN)], "security": key,
            "responses": {"200": {"description": "The request, claimed", "content": _json(RequestView)},
                          **_problems(403, 404, 409, 503, *body_errors)}}},
        "/api/sessions/{session_id}/requests/{call_id}/release": {"post": {
            "operationId": "release", "summary": "Release a claim (the claimer, or the admins role)",
            "parameters": [session_id, _path_param("call_id", ID_PATTERN)], "security": key,
            "responses": {"200": {"description": "The request, free", "content": _json(RequestView)},
                          **_problems(403, 404, 409, 503, *body_errors)}}},
        "/api/delegations/{user}": {
            "get": {"operationId": "getDelegations", "security": key, "parameters": [user],
                    "summary": "The user's out-of-office delegation and those made to them (the user, the "
                               "delegate, admins, auditors)",
                    "responses": {"200": {"description": "Delegations", "content": _json(DelegationsView)},
                                  **_problems(400, 403, 422, 503)}},
            "put": {"operationId": "setDelegation", "security": key, "parameters": [user],
                    "summary": "Set or replace the user's delegation (the user or admins); to oneself or a "
                               "cycle is refused",
                    "requestBody": {"required": True, "content": _json(DelegationBody)},
                    "responses": {"200": {"description": "Set", "content": _json(DelegationView)},
                                  **_problems(403, 409, 503, *body_errors)}},
            "delete": {"operationId": "endDelegation", "security": key, "parameters": [user],
                       "summary": "End the user's delegation now (the user or admins)",
                       "responses": {"200": {"description": "Ended", "content": _json(DelegationsView)},
                                     **_problems(400, 403, 422, 503)}}},
        "/api/sessions/{session_id}/audit": {"get": {
            "operationId": "audit", "summary": "Audit trail; verify=true recomputes the hash chain",
            "parameters": [session_id, {"name": "verify", "in": "query",
                                        "schema": {"type": "string", "enum": ["true", "false"]}}],
            "security": key,
            "responses": {"200": {"description": "Records", "content": _json(AuditView)},
                          **_problems(400, 404, 503)}}},
        "/api/decide": {
            "get": {
                "operationId": "decisionPage",
                "summary": "Decision link: a confirmation page with Approve / Reject (opening it decides nothing)",
                "security": [],
                "parameters": [{"name": "token", "in": "query", "required": True,
                                "description": "The signed token of an e-mailed decision link",
                                "schema": {"type": "string"}}],
                "responses": _pages({200: "The request and a form that posts the decision",
                                    401: "A sign-in link: sign in first",
                                    403: "Forged, tampered or malformed token, or the caller may not decide",
                                    410: "Expired link, or the request was decided already",
                                    503: "Storage unavailable; try again later"})},
            "post": {
                "operationId": "decideByLink",
                "summary": "Decision link: record the decision the confirmation page posts",
                "security": [],
                "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "required": ["token", "decision"],
                    "properties": {"token": {"type": "string"},
                                   "decision": {"type": "string", "enum": ["approve", "reject"]},
                                   "text": {"type": "string", "description": "The answer's free-text field"}}}}}},
                "responses": _pages({200: "Decided", 400: "Neither approve nor reject",
                                    401: "A sign-in link: sign in first",
                                    403: "Forged, tampered or malformed token, or the caller may not decide",
                                    410: "Expired link, or the request was decided already",
                                    422: "The answer does not match the request's response type",
                                    503: "Storage unavailable; try again later"})},
        },
        **_app_pages(session_id),
        "/api/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document (anonymous)", "security": [],
            "responses": {"200": {"description": "The OpenAPI 3.1 document",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/api/health": {"get": {
            "operationId": "health", "summary": "Storage and eventing reachability (anonymous)", "security": [],
            "responses": {"200": {"description": "Healthy", "content": _json(HealthView)},
                          "503": {"description": "Degraded", "content": {
                              "application/json": {"schema": _ref(HealthView)},
                              "application/problem+json": {"schema": _ref(Problem)}}}}}},
    })
    return {
        "openapi": "3.1.0",
        "info": {"title": "hitl", "version": "1.0.0",
                 "description": "Human-in-the-loop workflow sessions: start, decide, inspect, audit."},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"}},
        },
    }
