"""End to end over real HTTP against `make run`'s server: start -> inbox -> e-mail with a link -> decide."""

from __future__ import annotations

import concurrent.futures
import html
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from .host import LocalHost, running_host, wait_for

START = "/api/workflows/content-review/sessions"


def start(client: httpx.Client, session_id: str, draft: str = "Hello world", **extra: Any) -> dict[str, Any]:
    response = client.post(START, json={"session_id": session_id, "input": {"draft": draft, **extra}})
    assert response.status_code == 201, response.text
    return dict(response.json())


def mails_for(host: LocalHost, session_id: str) -> list[dict[str, Any]]:
    return [m for m in host.mailbox() if session_id in (m.get("text") or m.get("text_body") or "")]


def link_in(mail: dict[str, Any]) -> str:
    text = mail.get("text") or mail.get("text_body") or ""
    match = re.search(r"(http://127\.0\.0\.1:\d+/api/decide\?token=[A-Za-z0-9_\-.]+)", text)
    assert match, text
    return match.group(1)


def backend_env(request: pytest.FixtureRequest, name: str) -> dict[str, str]:
    """Settings that select a checkpoint backend — the only difference between the runs."""
    if name == "redis":
        return {"HITL_STORAGE": "redis", "HITL_REDIS_URL": request.getfixturevalue("redis_url")}
    if name == "cosmos":
        server = request.getfixturevalue("cosmos_server")
        return {"HITL_STORAGE": "cosmos", "HITL_COSMOS_ENDPOINT": server.endpoint, "HITL_COSMOS_KEY": server.key,
                "HITL_COSMOS_VERIFY_TLS": "false", "HITL_COSMOS_DATABASE": f"e2e{uuid.uuid4().hex[:12]}"}
    return {"HITL_STORAGE": "sqlite"}


@pytest.fixture(params=["sqlite", "redis", "cosmos"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The local host on each checkpoint backend in turn, chosen by settings only."""
    env = backend_env(request, request.param)
    with running_host(tmp_path / "data", HITL_NOTIFY_DEFAULT_RECIPIENTS="reviewers@example.test", **env) as h:
        yield h


@pytest.fixture
def sqlite_host(tmp_path: Path) -> Any:
    with running_host(tmp_path / "data", HITL_NOTIFY_DEFAULT_RECIPIENTS="reviewers@example.test") as h:
        yield h


def test_start_inbox_email_link_decision_completed(host: LocalHost) -> None:
    with host.client() as client:
        view = start(client, "e2e-1")
        call_id = view["pending_requests"][0]["call_id"]
        inbox = client.get("/api/requests", params={"workflow": "content-review"}).json()
        assert [(i["session_id"], i["call_id"]) for i in inbox["items"]] == [("e2e-1", call_id)]
        # the reviewers role: rita and ron each get their own e-mail, with a link that decides as them
        mail = wait_for(lambda: next((m for m in mails_for(host, "e2e-1") if m["to"] == ["rita@example.com"]), None))
        wait_for(lambda: any(m["to"] == ["ron@example.com"] for m in mails_for(host, "e2e-1")))
        assert "Hello world" in (mail.get("text") or mail.get("text_body"))
        link = link_in(mail)
        page = client.get(link)  # opening the link (a mail scanner would) decides nothing
        assert page.status_code == 200 and "Approve" in page.text
        assert client.get("/api/sessions/e2e-1").json()["status"] == "pending"
        token = html.unescape(re.search(r"""name=["']token["'] value=["']([^"']+)["']""", page.text).group(1))  # type: ignore[union-attr]
        done = client.post("/api/decide", data={"token": token, "decision": "approve"})
        assert done.status_code == 200 and "approved" in done.text
        session = client.get("/api/sessions/e2e-1").json()
        assert session["status"] == "completed" and session["outputs"] == [{"published": "Hello world"}]
        reused = client.post("/api/decide", data={"token": token, "decision": "reject"})
        assert reused.status_code == 410
        audit = client.get("/api/sessions/e2e-1/audit", params={"verify": "true"}).json()
        assert [r["action"] for r in audit["records"]] == ["started", "decided", "refused"]  # the reused link
        assert audit["verification"]["valid"] is True


def test_restart_between_start_and_decision(host: LocalHost) -> None:
    with host.client() as client:
        call_id = start(client, "e2e-restart")["pending_requests"][0]["call_id"]
    host.restart()
    with host.client() as client:
        response = client.post("/api/sessions/e2e-restart/responses",
                               json={"call_id": call_id, "result": {"approved": False, "feedback": "shorter"}})
        assert response.status_code == 200, response.text
        view = response.json()
        assert view["status"] == "pending" and view["pending_requests"][0]["data"]["iteration"] == 2


def test_concurrent_conflicting_decisions_one_wins(host: LocalHost) -> None:
    with host.client() as client:
        call_id = start(client, "e2e-race")["pending_requests"][0]["call_id"]

    def decide(i: int) -> int:
        with httpx.Client(base_url=host.base, timeout=60, headers={"X-HITL-User": "ron"}) as c:  # a reviewer
            body = {"call_id": call_id, "result": {"approved": i % 2 == 0, "feedback": str(i)}}
            return c.post("/api/sessions/e2e-race/responses", json=body).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=25) as pool:
        codes = list(pool.map(decide, range(50)))
    assert codes.count(200) == 1 and codes.count(409) == 49
    with host.client() as client:
        audit = client.get("/api/sessions/e2e-race/audit").json()
        assert [r["action"] for r in audit["records"]].count("decided") == 1


def test_bad_inputs_are_answered_precisely_and_change_nothing(sqlite_host: LocalHost) -> None:
    host = sqlite_host
    with host.client() as client:
        view = start(client, "e2e-bad")
        call_id = view["pending_requests"][0]["call_id"]
        url = "/api/sessions/e2e-bad/responses"
        json_headers = {"content-type": "application/json"}
        cases = [
            (client.post(url, content=b"{oops", headers=json_headers), 400),
            (client.post(url, json={"call_id": "nope", "result": {"approved": True}}), 409),
            (client.post(url, json={"call_id": call_id, "result": {"approved": "yes please"}}), 422),
            (client.post("/api/sessions/ghost/responses", json={"call_id": call_id, "result": {}}), 404),
            (client.post("/api/workflows/ghost/sessions", json={"input": {}}), 404),
            (client.post(url, content=b"x" * (1024 * 1024 + 10), headers=json_headers), 413),
            (client.post(url, content=b"call_id=1", headers={"content-type": "text/plain"}), 415),
        ]
        for response, status in cases:
            assert response.status_code == status, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["status"] == status
        assert cases[1][0].json()["pending_call_ids"] == [call_id]
        after = client.get("/api/sessions/e2e-bad").json()
        assert after["pending_requests"] == view["pending_requests"] and after["decisions"] == []
        assert client.get("/api/sessions/e2e-bad/audit").json()["records"][-1]["action"] == "started"


def test_health_and_openapi_are_served(sqlite_host: LocalHost) -> None:
    with sqlite_host.client() as client:
        assert client.get("/api/health").json() == {"status": "ok", "storage": "ok", "eventing": "ok"}
        assert client.get("/api/openapi.json").json()["openapi"] == "3.1.0"
