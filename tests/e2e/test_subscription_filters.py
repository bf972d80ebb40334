"""``track_deadlines`` is woken only for requests a deadline orchestration watches, on `make run`'s host.

Each delivery is a function execution (billed in Azure). A content-review has no deadline, so its
``hitl.request.created`` and ``hitl.request.resolved`` events carry ``deadline_tracked: false`` and
the subscription's advanced filter (the same one the Bicep deploys) keeps them from the function;
a contract-signoff has an escalation chain, so its created event reaches it and the deadline
orchestration starts. ``notify_reviewers`` still gets every request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from hitl_core.functions.events import deadline_instance_id
from tests.e2e.host import running_host, wait_for

CONTRACT = {"title": "Cloud hosting 2027", "counterparty": "Nimbus GmbH", "value": 120000, "currency": "EUR",
            "summary": "Three-year term.", "legal_reviewers": ["lena", "leo"]}


def deliveries(base: str) -> dict[str, Any]:
    return httpx.get(f"{base}/api/_dev/eventgrid", timeout=10).json()


def delivered(stats: dict[str, Any], function: str) -> int:
    return int(stats["functions"].get(function, {}).get("delivered", 0))


def test_only_requests_with_a_deadline_or_a_chain_wake_track_deadlines(tmp_path: Path) -> None:
    with running_host(tmp_path / "data", HITL_SMTP_HOST="off") as host:
        with host.client("mona") as mona:
            assert mona.post("/api/workflows/content-review/sessions",
                             json={"session_id": "plain", "input": {"draft": "x"}}).status_code == 201
            started = mona.post("/api/workflows/contract-signoff/sessions",
                                json={"session_id": "timed", "input": CONTRACT})
            assert started.status_code == 201, started.text
        with host.client("rita") as rita:
            call_id = rita.get("/api/sessions/plain").json()["pending_requests"][0]["call_id"]
            decided = rita.post("/api/sessions/plain/responses",
                                json={"call_id": call_id, "result": {"approved": True}})
            assert decided.status_code == 200 and decided.json()["status"] == "completed", decided.text
        # both requests notified, and nothing left to deliver
        wait_for(lambda: delivered(stats := deliveries(host.base), "notify_reviewers") == 2 and stats["pending"] == 0
                 and stats["in_flight"] == 0)
        stats = deliveries(host.base)
        assert delivered(stats, "track_deadlines") == 1, stats  # the contract's request only
        assert stats["failed"] == 0, stats
        # the contract's deadline walk runs; the content review never had one
        timed_call = started.json()["pending_requests"][0]["call_id"]
        orchestrations = f"{host.base}/runtime/webhooks/durabletask/instances/"
        walk = httpx.get(orchestrations + deadline_instance_id("timed", timed_call), timeout=10)
        assert walk.status_code == 202 and walk.json()["runtimeStatus"] in ("Pending", "Running"), walk.text
        none = httpx.get(orchestrations + deadline_instance_id("plain", call_id), timeout=10)
        assert none.status_code == 404, none.text
