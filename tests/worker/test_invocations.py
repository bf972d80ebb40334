"""Invoke the app through the worker runtime's own invocation path, and compare with the devhost.

Every invocation here is one ``InvocationRequest`` handed to ``azure_functions_runtime``'s
``invocation_request`` (:meth:`devhost.worker.WorkerApp.invoke`), with the trigger payload in the
shape the Functions host sends it: ``RpcHttp`` for HTTP (body as bytes, route values in
``params``, the query in ``query``), JSON for Event Grid (CloudEvents 1.0 *and* Event Grid schema)
and the timer, the orchestration context as a JSON string, the activity input as JSON. The runtime's
own converters turn them into the objects the functions receive and turn the return values back
into what the host would get.

The comparison side is the local development host (``python -m devhost``, a subprocess), which
calls the same user functions directly. Both sides use the **same** SQLite data folder (see
``conftest.py``), so a session written through one is read through the other, and identical
requests must get identical answers: same status, same content type, same JSON.

Both sides know the same people (devhost/demo-directory.json) and every call names its caller in
``X-HITL-User``, as the right person for the act: ``rita`` (``reviewers``) starts and reviews
content, ``ed`` files an expense for ``erin`` (whose manager ``amy`` decides it), and ``ada``
(``auditors``) reads where a neutral reader is needed. The worker side gets the request as the
platform's front end hands it on: with the client's address appended to ``X-Forwarded-For``, as the
devhost appends its socket peer.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import azure.functions as func
import httpx
import pytest

from devhost.durable import DURABLE_WEBHOOK_PREFIX, LocalDurableRuntime
from devhost.worker import Invocation, WorkerApp
from devhost.worker_protocol import ParameterBinding, RpcHttp, TypedData
from hitl_core.events.models import DEADLINE_TRACKED, EventType, make_event, tracks_deadline
from hitl_core.functions import get_runtime
from hitl_core.functions.durable import ORCHESTRATOR_NAME, deadline_input
from hitl_core.functions.events import deadline_instance_id
from tests.e2e.host import LocalHost

from .conftest import AppEnv, close_app_runtime

START = "/api/workflows/{workflow}/sessions"
#: What the client claims to come from (left end of X-Forwarded-For): never the audited source.
CLAIMED_ADDRESS = "203.0.113.7"
#: The client's address as the trusted front end appends it (the devhost appends its socket peer).
PEER = "127.0.0.1"
REVIEWER, AUDITOR = "rita", "ada"


def caller(user: str, **headers: str) -> dict[str, str]:
    """Headers of a JSON call made by ``user`` of the demo directory."""
    return {"content-type": "application/json", "x-hitl-user": user, "x-forwarded-for": CLAIMED_ADDRESS, **headers}


JSON_HEADERS = caller(REVIEWER)  # rita starts (and may review) content
AS_AUDITOR = {"x-hitl-user": AUDITOR}  # a neutral reader: may read every session and audit
#: ed files an expense for erin; amy, erin's manager in the directory, approves it first.
EXPENSE = {"employee": "erin", "amount": 4200, "currency": "EUR", "description": "conference"}
EXPENSE_HEADERS = caller("ed")
EXPENSE_MANAGER = "amy"

# DurableTask.Core's history event numbers (devhost.durable_history.EventType)
ORCHESTRATOR_STARTED, TASK_COMPLETED, TIMER_CREATED, ORCHESTRATOR_COMPLETED = 12, 5, 10, 13
EVENT_RAISED, EXECUTION_COMPLETED = 15, 1
# the out-of-process action numbers
CREATE_TIMER, WAIT_FOR_EXTERNAL_EVENT, WHEN_ANY = 5, 6, 11


# --- HTTP, on both sides --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str | None
    body: Any  # the JSON document, or the text when the body is not JSON


def _reply(status: int, headers: Mapping[str, str], raw: bytes) -> Reply:
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return Reply(status, content_type, body)


def _match(template: str, relative: str) -> dict[str, str] | None:
    """Route values of ``relative`` under an ``{name}`` route template (what the host's router does)."""
    parts, segments = template.strip("/").split("/"), relative.strip("/").split("/")
    if len(parts) != len(segments):
        return None
    values: dict[str, str] = {}
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{") and part.endswith("}"):
            values[part[1:-1]] = unquote(segment)
        elif part.lower() != segment.lower():
            return None
    return values


def _route(worker_app: WorkerApp, method: str, path: str) -> tuple[str, str, dict[str, str]]:
    """(function, trigger parameter, route values) for a request, from the worker's own metadata."""
    relative = path.removeprefix("/api/")
    found = []
    for row in worker_app.rows:
        trigger = next((b for b in row.bindings if b["type"] == "httpTrigger"), None)
        if trigger is None or method not in trigger["methods"]:
            continue
        values = _match(trigger["route"], relative)
        if values is not None:
            found.append((row.name, trigger["name"], values))
    assert len(found) == 1, f"{method} {path} matches {found}"
    return found[0]


async def via_worker(worker_app: WorkerApp, env: AppEnv, method: str, path: str, *,
                     query: Mapping[str, str] | None = None, body: bytes = b"",
                     headers: Mapping[str, str] | None = None) -> Reply:
    """The request as the host hands it to the worker: an ``RpcHttp`` trigger value.

    The platform's front end appends the client's address to ``X-Forwarded-For`` (the devhost
    appends its socket peer, :data:`PEER`): so does this, so both sides see the same header.
    """
    name, param, route_values = _route(worker_app, method, path)
    url = env.base_url + path + (f"?{urlencode(query)}" if query else "")
    sent = {k.lower(): v for k, v in (headers or {}).items()}
    sent["x-forwarded-for"] = ", ".join(filter(None, (sent.get("x-forwarded-for"), PEER)))
    request = TypedData(http=RpcHttp(method=method, url=url, headers=sent,
                                     body=TypedData(bytes=body), params=route_values, query=dict(query or {})))
    invocation = await worker_app.invoke(name, {param: request})
    assert invocation.ok, invocation.error
    return _reply(*invocation.http())


async def via_devhost(host: LocalHost, method: str, path: str, *, query: Mapping[str, str] | None = None,
                      body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
    async with httpx.AsyncClient(base_url=host.base, timeout=30) as client:
        response = await client.request(method, path, params=dict(query or {}), content=body,
                                        headers=dict(headers or {}))
    return _reply(response.status_code, response.headers, response.content)


async def both(worker_app: WorkerApp, env: AppEnv, host: LocalHost, method: str, path: str,
               **request: Any) -> tuple[Reply, Reply]:
    return (await via_worker(worker_app, env, method, path, **request),
            await via_devhost(host, method, path, **request))


def start_body(session_id: str, payload: Any) -> bytes:
    return json.dumps({"session_id": session_id, "input": payload}).encode()


_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def normalised(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with the given ids replaced by names and every timestamp by ``<time>``."""
    if isinstance(value, dict):
        return {key: normalised(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [normalised(item, names) for item in value]
    if isinstance(value, str):
        if _TIME.match(value):
            return "<time>"
        for old, new in names.items():
            value = value.replace(old, new)
    return value


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually[T](probe: Callable[[], Awaitable[T | None]], *, within: float = 20.0,
                        what: str = "condition") -> T:
    """Poll ``probe`` until it answers something truthy (no fixed sleeps as synchronisation)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {within} s")
        await asyncio.sleep(0.05)


# --- HTTP -----------------------------------------------------------------------------------------


async def test_anonymous_routes_answer_like_the_devhost(worker_app: WorkerApp, app_env: AppEnv,
                                                        devhost: LocalHost) -> None:
    health_w, health_d = await both(worker_app, app_env, devhost, "GET", "/api/health")
    assert health_w == health_d
    assert (health_w.status, health_w.content_type) == (200, "application/json")
    assert health_w.body == {"status": "ok", "storage": "ok", "eventing": "ok"}

    spec_w, spec_d = await both(worker_app, app_env, devhost, "GET", "/api/openapi.json")
    assert spec_w == spec_d
    assert spec_w.status == 200 and spec_w.body["openapi"].startswith("3.")


async def test_start_with_a_json_body_then_the_same_request_on_both_sides(
        worker_app: WorkerApp, app_env: AppEnv, devhost: LocalHost) -> None:
    path = START.format(workflow="content-review")
    sid_w, sid_d = new_id("http-w"), new_id("http-d")
    created_w = await via_worker(worker_app, app_env, "POST", path, body=start_body(sid_w, {"draft": "Hello"}),
                                 headers=JSON_HEADERS)
    created_d = await via_devhost(devhost, "POST", path, body=start_body(sid_d, {"draft": "Hello"}),
                                  headers=JSON_HEADERS)
    assert (created_w.status, created_w.content_type) == (created_d.status, created_d.content_type) \
        == (201, "application/json")
    assert created_w.body["session_id"] == sid_w and created_w.body["status"] == "pending"
    assert created_w.body["pending_requests"][0]["data"] == {"draft": "Hello", "iteration": 1}

    def names(reply: Reply, label: str) -> dict[str, str]:
        return {reply.body["session_id"]: f"<{label}>", reply.body["pending_requests"][0]["call_id"]: "<call>"}

    assert normalised(created_w.body, names(created_w, "session")) == \
        normalised(created_d.body, names(created_d, "session"))

    # The identical request again, to both sides: each session exists in the shared storage now.
    for sid, created in ((sid_w, created_w), (sid_d, created_d)):
        again_w, again_d = await both(worker_app, app_env, devhost, "POST", path,
                                      body=start_body(sid, {"draft": "Hello"}), headers=JSON_HEADERS)
        assert again_w == again_d
        assert again_w.status == 200 and again_w.body["session_id"] == sid
        assert again_w.body["pending_requests"] == created.body["pending_requests"]

        # headers reached the function on both sides: the caller and the client address are audited,
        # the address the trusted front end appended, not the one the client claimed
        audit_w, audit_d = await both(worker_app, app_env, devhost, "GET", f"/api/sessions/{sid}/audit",
                                      query={"verify": "true"}, headers=AS_AUDITOR)
        assert audit_w == audit_d
        assert [(r["action"], r["actor"], r["source"]) for r in audit_w.body["records"]] == \
            [("started", REVIEWER, PEER)]
        assert audit_w.body["verification"]["valid"] is True


@pytest.mark.parametrize(("path", "body", "content_type", "status", "title"), [
    (START.format(workflow="content-review"), b'{"input": {"draft": ', "application/json", 400, "Malformed JSON"),
    (START.format(workflow="content-review"), b"draft=Hello", "text/plain", 415, "Unsupported media type"),
    (START.format(workflow="content-review"), b"", None, 400, "Bad request"),
    (START.format(workflow="content-review"), b'{"input": {}}', "application/json", 422, "Invalid input"),
    (START.format(workflow="no-such-flow"), b'{"input": {}}', "application/json", 404, "Workflow not found"),
    (START.format(workflow="Not_A_Name"), b'{"input": {}}', "application/json", 400, "Bad request"),
], ids=["bad-json", "not-json", "no-body", "invalid-input", "unknown-workflow", "bad-route-value"])
async def test_refused_bodies_are_the_same_problem_on_both_sides(
        worker_app: WorkerApp, app_env: AppEnv, devhost: LocalHost,
        path: str, body: bytes, content_type: str | None, status: int, title: str) -> None:
    headers = {"x-hitl-user": REVIEWER, **({"content-type": content_type} if content_type else {})}
    refused_w, refused_d = await both(worker_app, app_env, devhost, "POST", path, body=body, headers=headers)
    assert refused_w == refused_d
    assert (refused_w.status, refused_w.content_type) == (status, "application/problem+json")
    assert refused_w.body["title"] == title and refused_w.body["status"] == status


async def test_route_parameter_reads_the_same_stored_session(worker_app: WorkerApp, app_env: AppEnv,
                                                             devhost: LocalHost) -> None:
    path = START.format(workflow="content-review")
    sid_w, sid_d = new_id("route-w"), new_id("route-d")
    assert (await via_worker(worker_app, app_env, "POST", path, body=start_body(sid_w, {"draft": "via worker"}),
                             headers=JSON_HEADERS)).status == 201
    assert (await via_devhost(devhost, "POST", path, body=start_body(sid_d, {"draft": "via devhost"}),
                              headers=JSON_HEADERS)).status == 201
    for sid, draft in ((sid_w, "via worker"), (sid_d, "via devhost")):
        read_w, read_d = await both(worker_app, app_env, devhost, "GET", f"/api/sessions/{sid}", headers=AS_AUDITOR)
        assert read_w == read_d
        assert (read_w.status, read_w.content_type) == (200, "application/json")
        assert read_w.body["session_id"] == sid
        assert read_w.body["pending_requests"][0]["data"]["draft"] == draft
        # someone the session names nowhere is told it does not exist, alike on both sides
        hidden_w, hidden_d = await both(worker_app, app_env, devhost, "GET", f"/api/sessions/{sid}",
                                        headers={"x-hitl-user": "erin"})
        assert hidden_w == hidden_d
        assert (hidden_w.status, hidden_w.content_type) == (404, "application/problem+json")

    unknown = new_id("no-such-session")
    missing_w, missing_d = await both(worker_app, app_env, devhost, "GET", f"/api/sessions/{unknown}",
                                      headers=AS_AUDITOR)
    assert missing_w == missing_d
    assert (missing_w.status, missing_w.content_type) == (404, "application/problem+json")
    assert missing_w.body["session_id"] == unknown


async def test_query_parameters_filter_and_page_the_inbox(worker_app: WorkerApp, app_env: AppEnv,
                                                          devhost: LocalHost) -> None:
    started = []
    for index in range(3):
        sid = new_id(f"inbox-{index}")
        side = via_worker(worker_app, app_env, "POST", START.format(workflow="expense-approval"),
                          body=start_body(sid, EXPENSE), headers=EXPENSE_HEADERS) if index % 2 == 0 else \
            via_devhost(devhost, "POST", START.format(workflow="expense-approval"), body=start_body(sid, EXPENSE),
                        headers=EXPENSE_HEADERS)
        assert (await side).status == 201
        started.append(sid)

    # the inbox of erin's manager: what amy may decide
    manager = {"x-hitl-user": EXPENSE_MANAGER}
    everything_w, everything_d = await both(worker_app, app_env, devhost, "GET", "/api/requests",
                                            query={"workflow": "expense-approval", "limit": "200"}, headers=manager)
    assert everything_w == everything_d and everything_w.status == 200
    listed = [item["session_id"] for item in everything_w.body["items"]]
    assert set(started) <= set(listed)
    assert {item["workflow"] for item in everything_w.body["items"]} == {"expense-approval"}

    assert {tuple(item["approvers"]) for item in everything_w.body["items"]} == {(f"user:{EXPENSE_MANAGER}",)}

    first_w, first_d = await both(worker_app, app_env, devhost, "GET", "/api/requests",
                                  query={"workflow": "expense-approval", "limit": "1"}, headers=manager)
    assert first_w == first_d
    assert len(first_w.body["items"]) == 1 and first_w.body["continuation"]
    query = {"workflow": "expense-approval", "limit": "1", "continuation": first_w.body["continuation"]}
    second_w, second_d = await both(worker_app, app_env, devhost, "GET", "/api/requests", query=query,
                                    headers=manager)
    assert second_w == second_d
    assert [i["session_id"] for i in first_w.body["items"] + second_w.body["items"]] == listed[:2]

    for bad in ({"limit": "0"}, {"status": "done"}, {"workflow": "Not_A_Name"}):
        refused_w, refused_d = await both(worker_app, app_env, devhost, "GET", "/api/requests", query=bad,
                                          headers=manager)
        assert refused_w == refused_d
        assert (refused_w.status, refused_w.content_type) == (400, "application/problem+json")

    # every pending request: for the auditors and admins only, alike on both sides
    wide = {"workflow": "expense-approval", "scope": "all", "limit": "200"}
    forbidden_w, forbidden_d = await both(worker_app, app_env, devhost, "GET", "/api/requests", query=wide,
                                          headers=manager)
    assert forbidden_w == forbidden_d
    assert (forbidden_w.status, forbidden_w.content_type) == (403, "application/problem+json")
    all_w, all_d = await both(worker_app, app_env, devhost, "GET", "/api/requests", query=wide, headers=AS_AUDITOR)
    assert all_w == all_d and all_w.status == 200
    assert set(started) <= {item["session_id"] for item in all_w.body["items"]}


# --- Event Grid -------------------------------------------------------------------------------------


def eventgrid_schema(cloud_event: Mapping[str, Any]) -> dict[str, Any]:
    """The same event in the Event Grid schema (what a topic with that input schema delivers)."""
    return {"id": cloud_event["id"], "topic": cloud_event["source"], "subject": cloud_event["subject"],
            "eventType": cloud_event["type"], "eventTime": cloud_event["time"], "data": cloud_event["data"],
            "dataVersion": "1.0", "metadataVersion": "1"}


_TOKEN = re.compile(r"token=([A-Za-z0-9_\-]+)\.([A-Za-z0-9_\-]+)")


def mail_shape(mail: Mapping[str, Any]) -> dict[str, Any]:
    """A received mail without what depends on the event id or the clock (a link's token is signed
    with an expiry and a nonce: only who it decides as is kept)."""
    headers = {k: re.sub(r'boundary="[^"]*"', 'boundary="<boundary>"', v) for k, v in mail["headers"].items()
               if k not in ("Message-ID", "Date", "X-HITL-Event-Id")}

    def tokens(text: str) -> str:
        return _TOKEN.sub(lambda m: f"token=<link of {link_claims(m.group(0))['approver']}>", text)

    return {"from": mail["from"], "to": mail["to"], "cc": mail["cc"], "rcpt": mail["envelope"]["rcpt_tos"],
            "subject": mail["subject"], "text": tokens(mail["text"]), "html": tokens(mail["html"]),
            "headers": headers}


def link_claims(text: str) -> dict[str, Any]:
    """The claims of the (first) decision link token in ``text`` (its payload is plain base64url JSON)."""
    match = _TOKEN.search(text)
    assert match, text
    payload = match.group(1)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def by_recipient(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mails keyed by their one recipient (each recipient gets a message of their own)."""
    keyed = {}
    for mail in found:
        (recipient,) = mail["envelope"]["rcpt_tos"]
        assert recipient not in keyed, f"{recipient} got two messages: {found}"
        keyed[recipient] = mail
    return keyed


async def mails(host: LocalHost, header: str, value: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{host.base}/api/_dev/mailbox")
    response.raise_for_status()
    return [m for m in response.json()["messages"] if m["headers"].get(header) == value]


async def publish_to_devhost_topic(env: AppEnv, events: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(env.topic_url, content=json.dumps(events).encode(), headers={
            "aeg-sas-key": env.topic_key, "content-type": "application/cloudevents-batch+json; charset=utf-8"})
    assert response.status_code == 200, response.text


def runtime_decode(worker_app: WorkerApp, function: str, param: str, data: TypedData) -> Any:
    """What the runtime's own converter hands ``function``'s ``param`` for ``data`` (the invocation's step)."""
    from azure_functions_runtime import handle_event
    from azure_functions_runtime.bindings import meta

    info = handle_event._functions.get_function(worker_app.function_id(function))
    assert info is not None
    binding = info.input_types[param]
    return binding.pytype, meta.from_incoming_proto(binding.binding_name, ParameterBinding(name=param, data=data),
                                                    pytype=binding.pytype, trigger_metadata={},
                                                    function_name=function)


async def test_notify_reviewers_takes_both_event_schemas_like_the_devhost(
        worker_app: WorkerApp, app_env: AppEnv, devhost: LocalHost) -> None:
    sid = new_id("eventgrid")
    created = await via_worker(worker_app, app_env, "POST", START.format(workflow="content-review"),
                               body=start_body(sid, {"draft": "Both schemas"}), headers=JSON_HEADERS)
    assert created.status == 201
    view = created.body["pending_requests"][0]
    assert view["approvers"] == ["role:reviewers"] and view["decide_url"] is None  # links are per recipient
    published = make_event(EventType.REQUEST_CREATED, workflow="content-review", session_id=sid,
                           call_id=view["call_id"], data=view)
    ids = {side: f"{published['id']}-{side}" for side in ("devhost", "cloudevent", "eventgrid")}

    # The devhost: its local topic delivers the CloudEvent to its notify_reviewers, which e-mails each
    # member of the reviewers role (rita, ron) a message of their own.
    reviewers = ["rita@example.com", "ron@example.com"]

    async def mailed(event_id: str) -> list[dict[str, Any]] | None:
        found = await mails(devhost, "X-HITL-Event-Id", event_id)
        return found if len(found) >= len(reviewers) else None

    await publish_to_devhost_topic(app_env, [dict(published, id=ids["devhost"])])
    by_devhost = by_recipient(await eventually(lambda: mailed(ids["devhost"]), what="the devhost's notification"))
    assert sorted(by_devhost) == reviewers

    # The worker: the same event in the CloudEvents 1.0 schema and in the Event Grid schema.
    cloud = TypedData(json=json.dumps(dict(published, id=ids["cloudevent"])))
    grid = TypedData(json=json.dumps(eventgrid_schema(dict(published, id=ids["eventgrid"]))))
    # One annotation, two objects: the runtime's converter decides from the payload.
    annotation, as_cloud = runtime_decode(worker_app, "notify_reviewers", "event", cloud)
    _, as_grid = runtime_decode(worker_app, "notify_reviewers", "event", grid)
    assert annotation is func.EventGridEvent
    assert isinstance(as_cloud, func.CloudEvent) and as_cloud.type == "hitl.request.created"
    assert isinstance(as_grid, func.EventGridEvent) and as_grid.event_type == "hitl.request.created"
    assert as_grid.topic == published["source"] and as_grid.get_json() == view

    for name, data in (("cloudevent", cloud), ("eventgrid", grid)):
        invocation = await worker_app.invoke("notify_reviewers", {"event": data})
        assert invocation.ok, invocation.error
        assert invocation.return_value is None
        # the function awaits the sends: the mails are in the sink when the invocation answers
        by_worker = by_recipient(await mails(devhost, "X-HITL-Event-Id", ids[name]))
        assert sorted(by_worker) == reviewers, name
        for recipient, mail in by_worker.items():
            assert mail_shape(mail) == mail_shape(by_devhost[recipient]), (name, recipient)
    for recipient, mail in by_devhost.items():
        assert mail["headers"]["X-HITL-Session"] == sid
        assert mail["headers"]["X-HITL-Event-Type"] == "hitl.request.created"
        assert mail["to"] == [recipient] and "Both schemas" in mail["text"]
        # the decision link in each message decides as that reviewer, and only for this request
        claims = link_claims(mail["text"])
        assert (claims["approver"], claims["session_id"], claims["call_id"]) == \
            (recipient.partition("@")[0], sid, view["call_id"])
    assert len({mail["headers"]["Message-ID"] for mail in by_devhost.values()}) == len(reviewers)

    # Event Grid redelivers what the devhost already handled: the shared de-duplication holds.
    redelivery = await worker_app.invoke("notify_reviewers",
                                         {"event": TypedData(json=json.dumps(dict(published, id=ids["devhost"])))})
    assert redelivery.ok, redelivery.error
    assert sorted(by_recipient(await mails(devhost, "X-HITL-Event-Id", ids["devhost"]))) == reviewers


# --- the timer ---------------------------------------------------------------------------------------


def timer_payload(past_due: bool = False) -> TypedData:
    """The timer trigger value the host sends (``TimerInfo`` as JSON)."""
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    return TypedData(json=json.dumps({
        "Schedule": {"AdjustForDST": True},
        "ScheduleStatus": {"Last": (now - dt.timedelta(minutes=1)).isoformat(), "Next": now.isoformat(),
                           "LastUpdated": now.isoformat()},
        "IsPastDue": past_due,
    }))


async def _reconfigure(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """New settings for the in-process app (as a restarted worker would read them)."""
    await close_app_runtime()
    for name, value in values.items():
        monkeypatch.setenv(name, value)


async def test_timer_sweep_republishes_an_event_left_in_the_outbox(
        worker_app: WorkerApp, app_env: AppEnv, devhost: LocalHost, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A store of its own (the devhost's own sweep never sees it) and a topic that refuses the key:
    # the start saves its event in the outbox, the publish fails, the event stays behind.
    await _reconfigure(monkeypatch, HITL_DATA_DIR=str(tmp_path / "private"),
                       HITL_EVENTGRID_TOPIC_ENDPOINT=app_env.topic_url, HITL_EVENTGRID_TOPIC_KEY="not-the-key")
    sid = new_id("sweep")
    created = await via_worker(worker_app, app_env, "POST", START.format(workflow="content-review"),
                               body=start_body(sid, {"draft": "Left behind"}), headers=JSON_HEADERS)
    assert created.status == 201
    stored = await get_runtime().service.storage.load(sid)
    assert stored is not None
    (left,) = stored.checkpoint.outbox
    assert left["type"] == "hitl.request.created"
    assert await mails(devhost, "X-HITL-Session", sid) == []

    await _reconfigure(monkeypatch, HITL_EVENTGRID_TOPIC_KEY=app_env.topic_key)
    invocation = await worker_app.invoke("sweep_outbox", {"timer": timer_payload()})
    assert invocation.ok, invocation.error
    assert invocation.return_value is None
    stored = await get_runtime().service.storage.load(sid)
    assert stored is not None and stored.checkpoint.outbox == []  # published, then cleared by the sweep

    # the devhost's topic got it and its notify_reviewers mailed it, with the id the outbox held, to
    # each of the request's approvers (the reviewers role: rita and ron), one e-mail each
    async def both() -> list[dict[str, Any]]:
        found = await mails(devhost, "X-HITL-Event-Id", left["id"])
        return found if len(found) >= 2 else []

    delivered = await eventually(both, what="the republished event, to both reviewers")
    assert sorted(address for mail in delivered for address in mail["to"]) == ["rita@example.com", "ron@example.com"]
    assert all(m["headers"]["X-HITL-Session"] == sid and "Left behind" in m["text"] for m in delivered)


# --- Durable: one orchestrator replay, one activity -----------------------------------------------------


async def durable(host: LocalHost, method: str, path: str, **request: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=host.base + DURABLE_WEBHOOK_PREFIX, timeout=10) as client:
        return await client.request(method, path, **request)


async def history_until(host: LocalHost, instance_id: str, event_type: int, *, count: int = 1) -> dict[str, Any]:
    """The devhost's status of ``instance_id`` once its history holds ``count`` events of ``event_type``."""
    async def probe() -> dict[str, Any] | None:
        response = await durable(host, "GET", f"/instances/{instance_id}", params={"showHistory": "true"})
        if response.status_code == 404:
            return None
        status = dict(response.json())
        kinds = [e["EventType"] for e in status.get("historyEvents") or []]
        return status if kinds.count(event_type) >= count else None

    return await eventually(probe, what=f"{instance_id} history with event {event_type}")


def orchestration_context(instance_id: str, history: list[dict[str, Any]], played: int) -> str:
    """The context JSON the Durable host sends an orchestrator (as devhost.durable builds it)."""
    started = next(e for e in history if e["EventType"] == 0)
    return json.dumps({
        "history": [{**e, "IsPlayed": index < played} for index, e in enumerate(history)],
        "instanceId": instance_id,
        "isReplaying": played > 0,
        "parentInstanceId": None,
        "input": started["Input"],
        "upperSchemaVersion": 1,
    })


def direct_orchestrator_call(worker_app: WorkerApp, context: str) -> Any:
    """What the devhost does: the user function (the SDK's handle) called with the context JSON."""
    from azure_functions_runtime import handle_event

    info = handle_event._functions.get_function(worker_app.function_id(ORCHESTRATOR_NAME))
    assert info is not None
    return json.loads(info.func(context))


def _when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_orchestrator_replay_decides_what_the_devhost_decided(
        worker_app: WorkerApp, app_env: AppEnv, devhost: LocalHost) -> None:
    instance_id = new_id("worker-replay")
    deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    payload = dict(deadline_input(new_id("replay-session"), "replay-call", deadline, get_runtime().settings),
                   reminder_interval_seconds=3600)
    started = await durable(devhost, "POST", f"/orchestrators/{ORCHESTRATOR_NAME}/{instance_id}", json=payload)
    assert started.status_code == 202, started.text
    first = await history_until(devhost, instance_id, ORCHESTRATOR_COMPLETED)
    history = first["historyEvents"]
    assert [e["EventType"] for e in history] == [ORCHESTRATOR_STARTED, 0, TIMER_CREATED, ORCHESTRATOR_COMPLETED]

    # Episode one, through the worker: the devhost's first two events, nothing played yet.
    context = orchestration_context(instance_id, history[:2], played=0)
    invocation = await worker_app.invoke(ORCHESTRATOR_NAME, {"context": TypedData(string=context)})
    assert invocation.ok, invocation.error
    state = invocation.json()
    assert state == direct_orchestrator_call(worker_app, context)
    assert state["isDone"] is False and not state.get("error")
    (any_of,) = [action for group in state["actions"] for action in group]
    assert any_of["actionType"] == WHEN_ANY
    wait, timer = any_of["compoundActions"]
    assert (wait["actionType"], wait["externalEventName"]) == (WAIT_FOR_EXTERNAL_EVENT, "decided")
    assert timer["actionType"] == CREATE_TIMER
    assert _when(timer["fireAt"]) == _when(history[2]["FireAt"])  # the timer the devhost created
    assert _when(timer["fireAt"]) == _when(history[0]["Timestamp"]) + dt.timedelta(hours=1)

    # The decision arrives on the devhost; then replay its whole history through the worker.
    raised = await durable(devhost, "POST", f"/instances/{instance_id}/raiseEvent/decided",
                           json={"event": "hitl.request.resolved"})
    assert raised.status_code == 202, raised.text
    final = await history_until(devhost, instance_id, EXECUTION_COMPLETED)
    assert final["runtimeStatus"] == "Completed"
    history = final["historyEvents"]
    episode = history[: [e["EventType"] for e in history].index(EVENT_RAISED) + 1]
    assert [e["EventType"] for e in episode[4:]] == [ORCHESTRATOR_STARTED, EVENT_RAISED]
    context = orchestration_context(instance_id, episode, played=4)
    replay = await worker_app.invoke(ORCHESTRATOR_NAME, {"context": TypedData(string=context)})
    assert replay.ok, replay.error
    state = replay.json()
    assert state == direct_orchestrator_call(worker_app, context)
    assert state["isDone"] is True
    assert state["output"] == final["output"] == {"outcome": "decided", "reminders": 0}
    assert json.loads(history[-1]["Result"]) == state["output"]


def durable_client_binding(host: LocalHost, folder: Path) -> TypedData:
    """The ``durableClient`` binding value the host sends (the devhost's own builder, its URL)."""
    starter = LocalDurableRuntime([], store_path=folder / "unused-durable.db", base_url=host.base)
    return TypedData(string=starter.client_binding_json())


def request_event(event_type: EventType, session_id: str, call_id: str, deadline: str) -> dict[str, Any]:
    """A request event (the service's shapes) for a session that exists nowhere: only Durable reacts."""
    common = {"call_id": call_id, "session_id": session_id, "workflow": "expense-approval",
              "executor_id": "request_info", "deadline": deadline}
    if event_type == EventType.REQUEST_CREATED:  # the request view
        data = {**common, "request_type": "ExpenseApprovalRequest", "data": {"description": "tracked"},
                "response_schema": {}, "approvers": [f"user:{EXPENSE_MANAGER}"], "status": "pending"}
    else:  # what HitlService._resolved_event announces
        data = {**common, "status": "answered", "decision": {"call_id": call_id, "outcome": "answered"}}
    data[DEADLINE_TRACKED] = tracks_deadline(data)  # as the service marks it (the subscription filters on it)
    return make_event(event_type, workflow="expense-approval", session_id=session_id, call_id=call_id, data=data)


async def test_track_deadlines_drives_the_devhost_orchestration_like_its_own_trigger(
        worker_app: WorkerApp, app_env: AppEnv, devhost: LocalHost, tmp_path: Path) -> None:
    deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    requests = {side: (new_id(f"tracked-{side}"), new_id("call")) for side in ("worker", "devhost")}
    instances = {side: deadline_instance_id(*ids) for side, ids in requests.items()}
    client = durable_client_binding(devhost, tmp_path)

    async def through_worker(event_type: EventType) -> None:
        event = request_event(event_type, *requests["worker"], deadline)
        invocation = await worker_app.invoke("track_deadlines", {"event": TypedData(json=json.dumps(event)),
                                                                 "client": client})
        assert invocation.ok, invocation.error
        assert invocation.return_value is None

    async def through_devhost(event_type: EventType) -> None:
        await publish_to_devhost_topic(app_env, [request_event(event_type, *requests["devhost"], deadline)])

    def comparable(side: str, status: dict[str, Any]) -> Any:
        session_id, call_id = requests[side]
        return normalised({key: status[key] for key in ("name", "runtimeStatus", "input", "output")} |
                          {"history": [e["EventType"] for e in status["historyEvents"]]},
                          {session_id: "<session>", call_id: "<call>"})

    # request.created with a deadline: the orchestration starts and waits on its first timer.
    await through_worker(EventType.REQUEST_CREATED)
    await through_devhost(EventType.REQUEST_CREATED)
    waiting = {side: await history_until(devhost, instance_id, ORCHESTRATOR_COMPLETED)
               for side, instance_id in instances.items()}
    assert comparable("worker", waiting["worker"]) == comparable("devhost", waiting["devhost"])
    assert waiting["worker"]["runtimeStatus"] == "Running"
    assert waiting["worker"]["input"] == deadline_input(*requests["worker"], deadline, get_runtime().settings)

    # Event Grid redelivers request.created: already tracked, nothing new starts.
    await through_worker(EventType.REQUEST_CREATED)
    again = await history_until(devhost, instances["worker"], ORCHESTRATOR_COMPLETED)
    assert again["historyEvents"] == waiting["worker"]["historyEvents"]

    # request.resolved: the worker's client raises "decided" and the orchestration ends as the devhost's does.
    await through_worker(EventType.REQUEST_RESOLVED)
    await through_devhost(EventType.REQUEST_RESOLVED)
    done = {side: await history_until(devhost, instance_id, EXECUTION_COMPLETED)
            for side, instance_id in instances.items()}
    assert comparable("worker", done["worker"]) == comparable("devhost", done["devhost"])
    assert done["worker"]["runtimeStatus"] == "Completed"
    assert done["worker"]["output"] == {"outcome": "decided", "reminders": 0}


async def test_activity_apply_timeout_matches_the_devhost_run(
        worker_app: WorkerApp, app_env: AppEnv, devhost: LocalHost) -> None:
    path = START.format(workflow="expense-approval")
    twins: dict[str, dict[str, Any]] = {}
    for side in ("worker", "devhost"):
        sid = new_id(f"timeout-{side}")
        created = await via_worker(worker_app, app_env, "POST", path, body=start_body(sid, EXPENSE),
                                   headers=EXPENSE_HEADERS)
        assert created.status == 201, created.body
        twins[side] = created.body["pending_requests"][0]
        assert twins[side]["approvers"] == [f"user:{EXPENSE_MANAGER}"] and twins[side]["deadline"]

    # The worker runs the activity, with the input the orchestrator passes.
    mine = twins["worker"]
    invocation = await worker_app.invoke("apply_timeout", {"payload": TypedData(json=json.dumps(
        {"session_id": mine["session_id"], "call_id": mine["call_id"]}))})
    assert invocation.ok, invocation.error
    by_worker = invocation.json()

    # The devhost runs it for the twin inside its deadline orchestration, whose deadline has passed.
    theirs = twins["devhost"]
    instance_id = new_id("worker-timeout")
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    payload = deadline_input(theirs["session_id"], theirs["call_id"], past, get_runtime().settings)
    started = await durable(devhost, "POST", f"/orchestrators/{ORCHESTRATOR_NAME}/{instance_id}", json=payload)
    assert started.status_code == 202, started.text
    status = await history_until(devhost, instance_id, TASK_COMPLETED)
    (completed,) = [e for e in status["historyEvents"] if e["EventType"] == TASK_COMPLETED]
    by_devhost = json.loads(completed["Result"])
    assert (await durable(devhost, "POST", f"/instances/{instance_id}/terminate")).status_code == 202

    assert by_worker["outcome"] == by_devhost["outcome"] == "escalated"
    assert abs(_when(by_worker["deadline"]) - _when(by_devhost["deadline"])) < dt.timedelta(minutes=1)
    assert _when(by_worker["deadline"]) - dt.datetime.now(dt.UTC) > dt.timedelta(days=2, hours=23)

    # Same state change on both: escalated to finance, audited alike.
    views = {}
    for side, request in twins.items():
        sid = request["session_id"]
        read_w, read_d = await both(worker_app, app_env, devhost, "GET", f"/api/sessions/{sid}", headers=AS_AUDITOR)
        assert read_w == read_d and read_w.status == 200
        audit = await via_devhost(devhost, "GET", f"/api/sessions/{sid}/audit", headers=AS_AUDITOR)
        records = [{k: v for k, v in r.items() if k not in ("hash", "prev_hash")}  # chained over ids and times
                   for r in audit.body["records"]]
        views[side] = normalised({"session": read_w.body, "audit": records},
                                 {sid: "<session>", request["call_id"]: "<call>"})
    assert views["worker"] == views["devhost"]
    assert views["worker"]["session"]["pending_requests"][0]["approvers"] == ["user:mona"]
    assert views["worker"]["session"]["pending_requests"][0]["subject"] == "erin"
    assert [(r["action"], r["actor"]) for r in views["worker"]["audit"]][:1] == [("started", "ed")]
    assert [r["action"] for r in views["worker"]["audit"]] == ["started", "escalated"]


async def test_a_function_that_raises_is_a_failure_with_its_message(worker_app: WorkerApp,
                                                                    app_env: AppEnv) -> None:
    invocation: Invocation = await worker_app.invoke("apply_timeout", {"payload": TypedData(json=json.dumps(
        {"session_id": new_id("no-call-id")}))})
    assert invocation.ok is False
    assert invocation.return_value is None
    assert invocation.error == "KeyError: 'call_id'"
