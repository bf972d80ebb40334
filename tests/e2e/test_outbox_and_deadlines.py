"""The outbox survives a crash between save and publish; Durable deadlines remind, escalate and expire."""

from __future__ import annotations

import time
from pathlib import Path

from .host import LocalHost, free_port, wait_for
from .test_review_flow import mails_for, start


def test_event_saved_but_not_published_is_delivered_once_after_a_crash(tmp_path: Path) -> None:
    host = LocalHost(tmp_path / "data", {"HITL_NOTIFY_DEFAULT_RECIPIENTS": "ops@example.test"})
    dead_topic = f"http://127.0.0.1:{free_port()}/api/events"  # nothing listens: publishing fails after the save
    host.start(HITL_EVENTGRID_TOPIC_ENDPOINT=dead_topic)
    try:
        with host.client() as client:
            start(client, "outbox-1")
        db_has_outbox = host.data_dir / "checkpoints.db"
        assert db_has_outbox.exists()
        host.kill()  # SIGKILL: the process dies with the event only in the outbox
        del host.extra_env["HITL_EVENTGRID_TOPIC_ENDPOINT"]
        host.start()
        assert mails_for(host, "outbox-1") == []  # nothing was delivered before the restart
        with host.client() as client:
            client.get("/api/sessions/outbox-1")  # the next call publishes what the outbox holds
            wait_for(lambda: mails_for(host, "outbox-1"))
            client.get("/api/sessions/outbox-1")
        time.sleep(1.5)  # room for a duplicate delivery to show up if there were one
        assert len(mails_for(host, "outbox-1")) == 1
    finally:
        host.stop()


def test_expense_deadline_reminds_escalates_and_expires(tmp_path: Path) -> None:
    host = LocalHost(tmp_path / "data", {
        "HITL_EXPENSE_MANAGER_DEADLINE_SECONDS": "3",
        "HITL_EXPENSE_FINANCE_DEADLINE_SECONDS": "3",
        "HITL_REMINDER_INTERVAL_SECONDS": "1",
        "HITL_NOTIFY_DEFAULT_RECIPIENTS": "ops@example.test",
    })
    host.start()
    try:
        with host.client() as client:
            response = client.post("/api/workflows/expense-approval/sessions", json={
                "session_id": "exp-1",
                "input": {"employee": "ann", "amount": 4200, "currency": "EUR", "description": "conference"}})
            assert response.status_code == 201, response.text
            request = response.json()["pending_requests"][0]
            assert request["approvers"] == ["managers"] and request["deadline"]

            def escalated() -> bool:
                view = client.get("/api/sessions/exp-1").json()
                pending = view["pending_requests"]
                return bool(pending) and pending[0]["approvers"] == ["finance-managers"]

            wait_for(escalated, timeout=30)
            records = client.get("/api/sessions/exp-1/audit").json()["records"]
            assert "escalated" in [r["action"] for r in records]
            wait_for(lambda: client.get("/api/sessions/exp-1").json()["status"] == "failed", timeout=30)
            final = client.get("/api/sessions/exp-1").json()
            assert final["decisions"][0]["outcome"] == "expired"
            actions = [r["action"] for r in client.get("/api/sessions/exp-1/audit",
                                                        params={"verify": "true"}).json()["records"]]
            assert actions == ["started", "escalated", "expired"]
        subjects = [m.get("subject", "") for m in mails_for(host, "exp-1")]
        assert any("Reminder" in s for s in subjects), subjects
        assert any("Escalated" in s for s in subjects), subjects
    finally:
        host.stop()


def test_expense_decided_before_deadline_ends_the_orchestration(tmp_path: Path) -> None:
    host = LocalHost(tmp_path / "data", {"HITL_EXPENSE_MANAGER_DEADLINE_SECONDS": "2",
                                         "HITL_REMINDER_INTERVAL_SECONDS": "60"})
    host.start()
    try:
        with host.client() as client:
            response = client.post("/api/workflows/expense-approval/sessions", headers={"x-hitl-user": "mgr"}, json={
                "session_id": "exp-2",
                "input": {"employee": "bo", "amount": 80, "currency": "USD", "description": "taxi", "manager": "mgr"}})
            call_id = response.json()["pending_requests"][0]["call_id"]
            time.sleep(0.5)
            body = {"call_id": call_id, "result": {"approved": True, "comment": "ok"}}
            own = client.post("/api/sessions/exp-2/responses", json=body, headers={"x-hitl-user": "mgr"})
            assert own.status_code == 403 and "may not approve" in own.json()["detail"]  # four eyes
            client.headers["x-hitl-user"] = "mgr-deputy"
            deputy = client.post("/api/sessions/exp-2/responses", json=body)
            assert deputy.status_code == 403  # not an approver of this request
            client.headers["x-hitl-roles"] = "mgr"
            decided = client.post("/api/sessions/exp-2/responses", json=body)
            assert decided.status_code == 200, decided.text
            assert decided.json()["outputs"] == [{"status": "approved", "amount": 80.0, "decided_by": ["mgr-deputy"]}]
            time.sleep(3)  # past the old deadline: nothing may expire now
            view = client.get("/api/sessions/exp-2").json()
            assert view["status"] == "completed"
            actions = [r["action"] for r in client.get("/api/sessions/exp-2/audit").json()["records"]]
            assert actions == ["started", "refused", "refused", "decided"]
    finally:
        host.stop()
