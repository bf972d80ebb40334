"""``HITL_SMTP_HOST=off`` switches e-mail off under `make run`'s host (the benchmark's "no notifications" run).

An empty value means "unset", and the local host then mails through its own SMTP sink; ``off``
is the explicit switch, and it must be honoured: the request is announced, but with no channel
left the app has no ``notify_reviewers`` subscription (as the Bicep makes none), so the function is
not even woken, and no mail reaches the sink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.host import running_host, wait_for


def topic(base: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/api/_dev/eventgrid", timeout=10).json())


def delivered_to_notify(base: str) -> int:
    return int(topic(base)["functions"].get("notify_reviewers", {}).get("delivered", 0))


def test_smtp_off_delivers_no_mail(tmp_path: Path) -> None:
    with running_host(tmp_path / "off", HITL_SMTP_HOST="off") as host:
        with host.client() as client:
            assert client.post("/api/workflows/content-review/sessions",
                               json={"session_id": "quiet", "input": {"draft": "x"}}).status_code == 201
        # the start answered after its event was published: a subscription would have a delivery row by now
        stats = topic(host.base)
        assert "notify_reviewers" in stats["subscribers"] and "notify_reviewers" not in stats["functions"], stats
        assert stats["pending"] == 0 and stats["in_flight"] == 0, stats
        assert host.mailbox() == []
    with running_host(tmp_path / "on") as host:  # the same without the switch mails both reviewers
        with host.client() as client:
            assert client.post("/api/workflows/content-review/sessions",
                               json={"session_id": "loud", "input": {"draft": "x"}}).status_code == 201
        wait_for(lambda: len(host.mailbox()) == 2)
        wait_for(lambda: delivered_to_notify(host.base) == 1)
