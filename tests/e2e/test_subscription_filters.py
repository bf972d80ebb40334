"""Each function is woken only for events it acts on, on `make run`'s host, as the Bicep subscribes it.

Each delivery is a function execution (billed in Azure). A content-review has no deadline, so its
``hitl.request.created`` and ``hitl.request.resolved`` events carry ``deadline_tracked: false`` and
the subscription's advanced filter (the same one the Bicep deploys) keeps them from
``track_deadlines``; a contract-signoff has an escalation chain, so its created event reaches it
and the deadline orchestration starts. ``notify_reviewers`` gets every request while a notification
channel is configured (here the host's own SMTP sink), and none without one (``HITL_SMTP_HOST=off``):
the Bicep then makes no subscription for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from hitl_core.functions.events import deadline_instance_id
from tests.e2e.host import LocalHost, running_host, wait_for

CONTRACT = {"title": "Cloud hosting 2027", "counterparty": "Nimbus GmbH", "value": 120000, "currency": "EUR",
            "summary": "Three-year term.", "legal_reviewers": ["lena", "leo"]}


def deliveries(base: str) -> dict[str, Any]:
    return httpx.get(f"{base}/api/_dev/eventgrid", timeout=10).json()


def delivered(stats: dict[str, Any], function: str) -> int:
    return int(stats["functions"].get(function, {}).get("delivered", 0))


def start_both_and_decide_the_review(host: LocalHost) -> tuple[str, str]:
    """mona starts a content-review and a contract-signoff, rita approves the review; the two call ids."""
    with host.client("mona") as mona:
        assert mona.post("/api/workflows/content-review/sessions",
                         json={"session_id": "plain", "input": {"draft": "x"}}).status_code == 201
        started = mona.post("/api/workflows/contract-signoff/sessions", json={"session_id": "timed", "input": CONTRACT})
        assert started.status_code == 201, started.text
    with host.client("rita") as rita:
        call_id = rita.get("/api/sessions/plain").json()["pending_requests"][0]["call_id"]
        decided = rita.post("/api/sessions/plain/responses", json={"call_id": call_id, "result": {"approved": True}})
        assert decided.status_code == 200 and decided.json()["status"] == "completed", decided.text
    return call_id, str(started.json()["pending_requests"][0]["call_id"])


def all_delivered(host: LocalHost) -> dict[str, Any]:
    """The topic's counts once the contract's deadline walk got its event and nothing is left to deliver."""

    def settled() -> dict[str, Any] | None:
        stats = deliveries(host.base)
        done = delivered(stats, "track_deadlines") == 1 and stats["pending"] == 0 and stats["in_flight"] == 0
        return stats if done else None

    return dict(wait_for(settled))


def test_only_requests_with_a_deadline_or_a_chain_wake_track_deadlines(tmp_path: Path) -> None:
    with running_host(tmp_path / "data") as host:  # e-mail on: the host's SMTP sink
        plain_call, timed_call = start_both_and_decide_the_review(host)
        stats = all_delivered(host)
        assert delivered(stats, "notify_reviewers") == 2, stats  # both requests notified
        assert delivered(stats, "track_deadlines") == 1, stats  # the contract's request only
        assert stats["failed"] == 0, stats
        wait_for(lambda: {"rita@example.com", "lena@example.com"} <= {
            r for m in host.mailbox() for r in m["envelope"]["rcpt_tos"]})
        # the contract's deadline walk runs; the content review never had one
        orchestrations = f"{host.base}/runtime/webhooks/durabletask/instances/"
        walk = httpx.get(orchestrations + deadline_instance_id("timed", timed_call), timeout=10)
        assert walk.status_code == 202 and walk.json()["runtimeStatus"] in ("Pending", "Running"), walk.text
        none = httpx.get(orchestrations + deadline_instance_id("plain", plain_call), timeout=10)
        assert none.status_code == 404, none.text


def test_without_a_notification_channel_notify_reviewers_is_not_woken(tmp_path: Path) -> None:
    """HITL_SMTP_HOST=off and no webhook: no notify_reviewers subscription, so no execution per request
    (each would only have ignored it); the deadline walk is unaffected and nothing is mailed."""
    with running_host(tmp_path / "data", HITL_SMTP_HOST="off") as host:
        start_both_and_decide_the_review(host)
        stats = all_delivered(host)
        # the function is there, but the topic made no delivery to it (none pending, failed or done)
        assert "notify_reviewers" in stats["subscribers"] and "notify_reviewers" not in stats["functions"], stats
        assert delivered(stats, "track_deadlines") == 1 and stats["failed"] == 0, stats
        assert host.mailbox() == []
