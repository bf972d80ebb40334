"""Decision links: GET never decides, POST does once; forged/expired/reused links are refused and audited."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime
from hitl_core.links import LinkSigner

from .conftest import call, http
from .test_http_adapter import start


def form(token: str, decision: str, text: str = "") -> bytes:
    from urllib.parse import urlencode

    return urlencode({"token": token, "decision": decision, "text": text}).encode()


async def created_link(publisher: InMemoryEventPublisher) -> str:
    await get_runtime().service.drain()
    url = publisher.events[-1]["data"]["decide_url"]
    assert isinstance(url, str)
    return url.split("token=", 1)[1]


async def test_get_shows_the_request_and_post_decides_once(runtime: InMemoryEventPublisher) -> None:
    await start("Launch <b>now</b>", session_id="link-1")
    token = await created_link(runtime)
    status, page, response = await call("decide_page", http("GET", "/api/decide", params={"token": token}))
    assert status == 200 and response.mimetype == "text/html"
    assert "Launch &lt;b&gt;now&lt;/b&gt;" in page and "<b>now</b>" not in page  # escaped
    assert response.headers["Cache-Control"] == "no-store"
    assert (await get_runtime().service.get_session("link-1")).status == "pending"  # GET decided nothing
    post = http("POST", "/api/decide", raw=form(token, "reject", "needs numbers"),
                headers={"content-type": "application/x-www-form-urlencoded"})
    status, page, _ = await call("decide_submit", post)
    assert status == 200 and "rejected" in page
    view = await get_runtime().service.get_session("link-1")
    assert view.decisions[0]["result"] == {"approved": False, "feedback": "needs numbers"}
    status, page, _ = await call("decide_submit", post)  # the same link again
    assert status == 410 and "already been decided" in page


async def test_forged_tampered_and_expired_links_are_refused_and_audited(runtime: InMemoryEventPublisher,
                                                                        tmp_path: Path) -> None:
    await start(session_id="link-2")
    token = await created_link(runtime)
    service = get_runtime().service
    call_id = (await service.get_session("link-2")).pending_requests[0].call_id
    payload, signature = token.split(".")
    tampered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    forged = LinkSigner(["attacker-key"], ttl_seconds=60).sign("link-2", call_id)
    key = (tmp_path / "link-signing.key").read_text()
    stale = LinkSigner([key], ttl_seconds=60, clock=lambda: time.time() - 3600).sign("link-2", call_id)
    for bad, status in ((forged, 403), (tampered, 403), ("garbage", 403), (stale, 410)):
        got, page, _ = await call("decide_submit", http("POST", "/api/decide", raw=form(bad, "approve"),
                                                        headers={"content-type": "application/x-www-form-urlencoded"}))
        assert got == status, page
    assert (await service.get_session("link-2")).status == "pending"
    audit = await service.audit("link-2", verify=True)
    refusals = [r for r in audit.records if r.action == "refused"]
    assert len(refusals) == 2  # forged and expired name the session; the others name nothing readable
    assert audit.verification is not None and audit.verification.valid


async def test_editing_a_stored_audit_record_breaks_verification(runtime: InMemoryEventPublisher,
                                                                 tmp_path: Path) -> None:
    _, view = await start(session_id="chain")
    call_id = view["pending_requests"][0]["call_id"]
    await call("post_response", http("POST", "/", body={"call_id": call_id, "result": {"approved": True}},
                                     route={"session_id": "chain"}, headers={"x-hitl-user": "amy"}))
    db = sqlite3.connect(tmp_path / "checkpoints.db")
    doc = db.execute("SELECT doc FROM audit WHERE session_id = 'chain' AND seq = 2").fetchone()[0]
    db.execute("UPDATE audit SET doc = ? WHERE session_id = 'chain' AND seq = 2",
               (re.sub(r'"actor":"amy"', '"actor":"mallory"', doc),))
    db.commit()
    db.close()
    status, audit, _ = await call("get_audit", http("GET", "/", route={"session_id": "chain"},
                                                    params={"verify": "true"}))
    assert status == 200
    assert audit["verification"] == {"valid": False, "checked": 1, "first_broken_seq": 2,
                                     "reason": "record content does not match its hash"}
