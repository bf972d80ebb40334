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
        recipients = sorted(address for m in mails_for(host, "outbox-1") for address in m["to"])
        assert recipients == ["rita@example.com", "ron@example.com"]  # the reviewers role, each once
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
        with host.client("ed") as client:  # ed (initiator) keeps read access to his own session
            response = client.post("/api/workflows/expense-approval/sessions", json={
                "session_id": "exp-1",
                "input": {"employee": "erin", "amount": 4200, "currency": "EUR", "description": "conference"}})
            assert response.status_code == 201, response.text
            request = response.json()["pending_requests"][0]
            assert request["approvers"] == ["user:amy"] and request["deadline"]  # erin's manager

            def escalated() -> bool:
                view = client.get("/api/sessions/exp-1").json()
                pending = view["pending_requests"]
                return bool(pending) and pending[0]["approvers"] == ["user:mona"]  # amy's manager, instead

            wait_for(escalated, timeout=30)
            records = client.get("/api/sessions/exp-1/audit").json()["records"]
            (escalation,) = [r for r in records if r["action"] == "escalated"]
            assert (escalation["detail"]["step"], escalation["detail"]["of"]) == (1, 2)
            assert (escalation["detail"]["from"], escalation["detail"]["to"]) == (["user:amy"], ["user:mona"])
            wait_for(lambda: client.get("/api/sessions/exp-1").json()["status"] == "failed", timeout=30)
            final = client.get("/api/sessions/exp-1").json()
            assert final["decisions"][0]["outcome"] == "expired"
            actions = [r["action"] for r in client.get("/api/sessions/exp-1/audit",
                                                        params={"verify": "true"}).json()["records"]]
            assert actions == ["started", "escalated", "expired"]
        mails = mails_for(host, "exp-1")
        assert any("Reminder" in m.get("subject", "") and m["to"] == ["amy@example.com"] for m in mails), mails
        # escalated to amy's manager: mona is e-mailed, told why and which step of the chain it is
        escalations = [m for m in mails if "Escalated" in m.get("subject", "")]
        assert [m["to"] for m in escalations] == [["mona@example.com"]], mails
        assert "Escalated (step 1 of 2)" in escalations[0]["subject"]
        body = escalations[0].get("text") or escalations[0].get("text_body") or ""
        assert "Escalated to you: no decision by " in body and " from user:amy." in body, body
        assert "This is step 1 of 2 of the request's escalation chain." in body, body
    finally:
        host.stop()


def test_expense_decided_before_deadline_ends_the_orchestration(tmp_path: Path) -> None:
    host = LocalHost(tmp_path / "data", {"HITL_EXPENSE_MANAGER_DEADLINE_SECONDS": "2",
                                         "HITL_REMINDER_INTERVAL_SECONDS": "60"})
    host.start()
    try:
        with host.client("amy") as client:  # amy starts an expense for ed, whose manager she is
            response = client.post("/api/workflows/expense-approval/sessions", json={
                "session_id": "exp-2",
                "input": {"employee": "ed", "amount": 80, "currency": "USD", "description": "taxi"}})
            assert response.status_code == 201, response.text
            call_id = response.json()["pending_requests"][0]["call_id"]
            time.sleep(0.5)
            body = {"call_id": call_id, "result": {"approved": True, "comment": "ok"}}
            own = client.post("/api/sessions/exp-2/responses", json=body)
            assert own.status_code == 403 and "may not approve" in own.json()["detail"]  # four eyes
            client.headers["x-hitl-user"] = "fay"
            stranger = client.post("/api/sessions/exp-2/responses", json=body)
            assert stranger.status_code == 404  # not involved: the session does not exist for her
            client.headers["x-hitl-user"] = "ed"
            subject = client.post("/api/sessions/exp-2/responses", json=body)
            assert subject.status_code == 403  # his own expense
        with host.client("adam") as admin:  # an admin reads everything, but only approvers decide
            assert admin.post("/api/sessions/exp-2/responses", json=body).status_code == 403
            assert admin.get("/api/sessions/exp-2").json()["status"] == "pending"
        # nobody else may decide, so amy's own request waits for her deadline, then escalates to her manager
        with host.client("mona") as mona:
            wait_for(lambda: mona.get("/api/sessions/exp-2").status_code == 200, timeout=30)
            decided = mona.post("/api/sessions/exp-2/responses", json=body)
            assert decided.status_code == 200, decided.text
            assert decided.json()["outputs"] == [{"status": "approved", "amount": 80.0, "decided_by": ["mona"]}]
            time.sleep(3)  # past the old deadline: nothing may expire now
            view = mona.get("/api/sessions/exp-2").json()
            assert view["status"] == "completed"
            actions = [r["action"] for r in mona.get("/api/sessions/exp-2/audit").json()["records"]]
            assert actions == ["started", "refused", "refused", "refused", "refused", "escalated", "decided"]
    finally:
        host.stop()
