"""The HTTP functions, called as the Functions host calls them: statuses, problem+json, no state change on errors."""

from __future__ import annotations

from typing import Any

from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime

from .conftest import call, http


async def start(draft: str = "Hello", session_id: str | None = None, **extra: Any) -> tuple[int, Any]:
    body: dict[str, Any] = {"input": {"draft": draft, **extra}}
    if session_id:
        body["session_id"] = session_id
    status, data, _ = await call("start_session", http("POST", "/api/workflows/content-review/sessions",
                                                       body=body, route={"workflow": "content-review"}))
    return status, data


async def stored_version(session_id: str) -> str | None:
    stored = await get_runtime().service.storage.load(session_id)
    return stored.version if stored else None


async def test_start_then_decide_then_completed(runtime: InMemoryEventPublisher) -> None:
    status, view = await start(session_id="s-1")
    assert status == 201
    assert view["status"] == "pending" and view["workflow"] == "content-review"
    (request,) = view["pending_requests"]
    assert request["data"] == {"draft": "Hello", "iteration": 1}
    assert request["response_schema"]["required"] == ["approved"]
    status, done, _ = await call("post_response", http(
        "POST", "/api/sessions/s-1/responses", body={"call_id": request["call_id"], "result": {"approved": True}},
        route={"session_id": "s-1"}, headers={"x-hitl-user": "amy"}))
    assert status == 200 and done["status"] == "completed"
    assert done["outputs"] == [{"published": "Hello"}]
    status, audit, _ = await call("get_audit", http("GET", "/api/sessions/s-1/audit", route={"session_id": "s-1"},
                                                    params={"verify": "true"}))
    assert status == 200
    assert [(r["action"], r["actor"]) for r in audit["records"]] == [("started", "tess"), ("decided", "amy")]
    assert audit["records"][1]["detail"]["result"] == {"approved": True, "feedback": ""}
    assert audit["verification"]["valid"] is True
    await get_runtime().service.drain()
    assert [e["type"] for e in runtime.events] == [
        "hitl.request.created", "hitl.request.resolved", "hitl.session.completed"
    ]
    created = runtime.events[0]
    assert created["subject"] == f"sessions/s-1/requests/{request['call_id']}"
    assert created["source"] == "/workflows/content-review"
    assert created["data"]["decide_url"] is None  # links are minted per recipient by the notifier, never in events


async def test_start_is_idempotent_for_the_same_input_and_conflicts_otherwise(runtime: InMemoryEventPublisher) -> None:
    assert (await start(session_id="same"))[0] == 201
    status, view = await start(session_id="same")
    assert status == 200 and view["session_id"] == "same"
    status, problem = await start("Other", session_id="same")
    assert status == 409 and problem["title"] == "Session conflict"


async def test_three_rejections_abandon_the_draft(runtime: InMemoryEventPublisher) -> None:
    _, view = await start(session_id="r")
    for round_ in range(1, 4):
        (request,) = view["pending_requests"]
        assert request["data"]["iteration"] == round_
        status, view, _ = await call("post_response", http(
            "POST", "/api/sessions/r/responses", route={"session_id": "r"},
            body={"call_id": request["call_id"], "result": {"approved": False, "feedback": f"fix {round_}"}}))
        assert status == 200
    assert view["status"] == "completed" and view["outputs"] == [{"status": "abandoned"}]


async def test_bad_inputs_get_precise_problems_and_change_nothing(runtime: InMemoryEventPublisher) -> None:
    _, view = await start(session_id="b")
    call_id = view["pending_requests"][0]["call_id"]
    before = await stored_version("b")
    route = {"session_id": "b"}
    cases: list[tuple[Any, int, str]] = [
        (http("POST", "/api/sessions/b/responses", raw=b"{not json", route=route,
              headers={"content-type": "application/json"}), 400, "Malformed JSON"),
        (http("POST", "/api/sessions/b/responses", raw=b"call_id=x", route=route,
              headers={"content-type": "application/x-www-form-urlencoded"}), 415, "Unsupported media type"),
        (http("POST", "/api/sessions/b/responses", raw=b"{" + b" " * (1024 * 1024 + 1) + b"}", route=route,
              headers={"content-type": "application/json"}), 413, "Payload too large"),
        (http("POST", "/api/sessions/b/responses", body={"call_id": "wrong", "result": {"approved": True}},
              route=route), 409, "Request not pending"),
        (http("POST", "/api/sessions/b/responses", body={"call_id": call_id, "result": {"approved": "maybe"}},
              route=route), 422, "Invalid result"),
        (http("POST", "/api/sessions/b/responses", body={"result": {}}, route=route), 422, "Invalid body"),
        (http("POST", "/api/sessions/b/responses", body={"call_id": "a/b", "result": {}}, route=route), 400,
         "Bad request"),
    ]
    for req, status, title in cases:
        got, problem, response = await call("post_response", req)
        assert (got, problem["title"]) == (status, title), problem
        assert response.mimetype == "application/problem+json"
        assert problem["status"] == status and problem["detail"]
    _, unknown, _ = await call("post_response", cases[3][0])
    assert unknown["pending_call_ids"] == [call_id]
    _, invalid, _ = await call("post_response", cases[4][0])
    assert invalid["errors"][0]["loc"] == ["approved"]
    assert await stored_version("b") == before


async def test_unknown_session_workflow_and_invalid_input(runtime: InMemoryEventPublisher) -> None:
    status, problem, _ = await call("get_session", http("GET", "/api/sessions/nope", route={"session_id": "nope"}))
    assert status == 404 and problem["session_id"] == "nope"
    status, problem, _ = await call("post_response", http(
        "POST", "/api/sessions/nope/responses", body={"call_id": "c", "result": {}}, route={"session_id": "nope"}))
    assert status == 404
    status, problem, _ = await call("start_session", http(
        "POST", "/api/workflows/nope/sessions", body={"input": {}}, route={"workflow": "nope"}))
    assert status == 404 and "content-review" in problem["known_workflows"]
    status, problem, _ = await call("start_session", http(
        "POST", "/api/workflows/content-review/sessions", body={"input": {"draft": ""}},
        route={"workflow": "content-review"}))
    assert status == 422 and problem["errors"][0]["loc"] == ["draft"]
    assert (await get_runtime().service.storage.list_sessions()).items == []


async def test_duplicate_decision_gets_409_with_the_recorded_one(runtime: InMemoryEventPublisher) -> None:
    _, view = await start(session_id="d")
    call_id = view["pending_requests"][0]["call_id"]
    req = http("POST", "/api/sessions/d/responses", body={"call_id": call_id, "result": {"approved": True}},
               route={"session_id": "d"}, headers={"x-hitl-user": "first"})
    assert (await call("post_response", req))[0] == 200
    status, problem, _ = await call("post_response", req)
    assert status == 409 and problem["title"] == "Request already handled"
    assert problem["decision"]["decided_by"] == "first"


async def test_inbox_pages_and_filters(runtime: InMemoryEventPublisher) -> None:
    for i in range(5):
        await start(f"draft {i}", session_id=f"inbox-{i}", reviewers=["amy"] if i % 2 == 0 else [])
    seen: list[str] = []
    continuation = None
    while True:
        params = {"limit": "2", **({"continuation": continuation} if continuation else {})}
        status, page, _ = await call("list_requests", http("GET", "/api/requests", params=params))
        assert status == 200 and len(page["items"]) <= 2
        seen += [item["session_id"] for item in page["items"]]
        continuation = page["continuation"]
        if continuation is None:
            break
    # the default caller is a reviewer: the role's requests (1, 3) are theirs; the others name amy
    assert sorted(seen) == ["inbox-1", "inbox-3"] and len(seen) == 2
    _, everything, _ = await call("list_requests", http("GET", "/api/requests", params={"scope": "all"}))
    assert sorted(i["session_id"] for i in everything["items"]) == [f"inbox-{i}" for i in range(5)]
    _, amy, _ = await call("list_requests", http("GET", "/api/requests", headers={"x-hitl-user": "amy",
                                                                                    "x-hitl-roles": ""}))
    assert sorted(i["session_id"] for i in amy["items"]) == ["inbox-0", "inbox-2", "inbox-4"]
    _, by_admin, _ = await call("list_requests", http("GET", "/api/requests", params={"assignee": "user:amy"}))
    assert sorted(i["session_id"] for i in by_admin["items"]) == ["inbox-0", "inbox-2", "inbox-4"]
    status, _, _ = await call("list_requests", http("GET", "/api/requests", params={"scope": "all"},
                                                    headers={"x-hitl-user": "amy", "x-hitl-roles": ""}))
    assert status == 403
    status, _, _ = await call("list_requests", http("GET", "/api/requests", params={"continuation": "garbage!"}))
    assert status == 400
    status, _, _ = await call("list_requests", http("GET", "/api/requests", params={"status": "done"}))
    assert status == 400


async def test_only_approvers_may_decide_and_refusals_are_audited(runtime: InMemoryEventPublisher) -> None:
    _, view = await start(session_id="auth", reviewers=["amy"])
    call_id = view["pending_requests"][0]["call_id"]
    body = {"call_id": call_id, "result": {"approved": True}}
    status, problem, _ = await call("post_response", http(
        "POST", "/api/sessions/auth/responses", body=body, route={"session_id": "auth"},
        headers={"x-hitl-user": "mallory"}))
    assert status == 403 and "mallory" in problem["detail"]
    still = await get_runtime().service.get_session("auth")
    assert [r.call_id for r in still.pending_requests] == [call_id]
    _, audit, _ = await call("get_audit", http("GET", "/", route={"session_id": "auth"}, params={"verify": "1"}))
    assert [r["action"] for r in audit["records"]] == ["started", "refused"]
    assert audit["verification"]["valid"] is True
    status, _, _ = await call("post_response", http(
        "POST", "/api/sessions/auth/responses", body=body, route={"session_id": "auth"},
        headers={"x-hitl-user": "AMY"}))
    assert status == 200


async def test_cancel_ends_pending_requests(runtime: InMemoryEventPublisher) -> None:
    await start(session_id="c")
    cancel = http("POST", "/api/sessions/c/cancel", route={"session_id": "c"})
    status, cancelled, _ = await call("cancel_session", cancel)
    assert status == 200 and cancelled["status"] == "cancelled" and cancelled["pending_requests"] == []
    assert cancelled["decisions"][0]["outcome"] == "cancelled"
    status, problem, _ = await call("cancel_session", cancel)
    assert status == 409 and problem["title"] == "Session closed"
    await get_runtime().service.drain()
    assert "hitl.session.cancelled" in [e["type"] for e in runtime.events]


async def test_health_is_anonymous_and_reports_reachability(runtime: InMemoryEventPublisher) -> None:
    status, body, _ = await call("health", http("GET", "/api/health"))
    assert status == 200 and body == {"status": "ok", "storage": "ok", "eventing": "ok"}


async def test_hostile_json_shapes_are_refused(runtime: InMemoryEventPublisher) -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    for body, detail in ((deep, "nesting"), ({"draft": "x" * 100_001}, "string")):
        status, problem, _ = await call("start_session", http(
            "POST", "/api/workflows/content-review/sessions", body={"input": body},
            route={"workflow": "content-review"}))
        assert status == 422 and detail in problem["detail"]
    assert (await get_runtime().service.storage.list_sessions()).items == []


async def test_openapi_document_is_generated_from_the_models(runtime: InMemoryEventPublisher) -> None:
    status, doc, _ = await call("openapi", http("GET", "/api/openapi.json"))
    assert status == 200 and doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) >= {"/api/workflows/content-review/sessions", "/api/workflows/expense-approval/sessions",
                                 "/api/sessions/{session_id}/responses", "/api/requests", "/api/health"}
    schemas = doc["components"]["schemas"]
    assert {"SessionView", "RequestView", "Problem", "StartContentReviewInput"} <= set(schemas)
    assert schemas["ExpenseInput"]["properties"]["amount"]["exclusiveMinimum"] == 0  # from the pydantic model
