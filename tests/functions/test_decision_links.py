"""Decision links decide as the person they were sent to; GET never writes; only signed tokens reach the audit.

No directory is configured here (``HITL_DIRECTORY=none``): a person is their sign-in name, and an
approver named by e-mail address is e-mailed at that address.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime, reset_runtime
from hitl_core.links import LinkSigner
from hitl_core.notify.models import RequestView as NotifiedRequest

from .conftest import call, http
from .test_http_adapter import start

FORM = {"content-type": "application/x-www-form-urlencoded"}
NOBODY = {"x-hitl-user": "", "x-hitl-roles": ""}  # a browser opening an e-mailed link sends no identity


def form(token: str, decision: str, text: str = "") -> bytes:
    from urllib.parse import urlencode

    return urlencode({"token": token, "decision": decision, "text": text}).encode()


async def links_for(session_id: str) -> dict[str, str]:
    """recipient e-mail -> the token of the link minted for them (what the notifier e-mails)."""
    service = get_runtime().service
    view = await service.get_session(session_id)
    request = NotifiedRequest.model_validate(view.pending_requests[0].model_dump(mode="json"))
    return {r.email: (r.decide_url or "").split("token=", 1)[1] for r in await service.notification_recipients(request)}


async def open_link(token: str, **headers: str) -> tuple[int, str, Any]:
    status, page, response = await call("decide_page", http("GET", "/api/decide", params={"token": token},
                                                             headers={**NOBODY, **headers}))
    return status, str(page), response


async def post_link(token: str, decision: str = "approve", text: str = "", **headers: str) -> tuple[int, str]:
    status, page, _ = await call("decide_submit", http("POST", "/api/decide", raw=form(token, decision, text),
                                                       headers={**FORM, **NOBODY, **headers}))
    return status, str(page)


async def refusals(session_id: str) -> list[Any]:
    audit = await get_runtime().service.audit(session_id, verify=True)
    assert audit.verification is not None and audit.verification.valid
    return [r for r in audit.records if r.action == "refused"]


async def test_each_recipient_gets_a_link_that_decides_as_them(runtime: InMemoryEventPublisher) -> None:
    await start("Launch <b>now</b>", session_id="link-1", reviewers=["rita@example.com", "ron@example.com"])
    links = await links_for("link-1")
    assert set(links) == {"rita@example.com", "ron@example.com"}
    assert links["rita@example.com"] != links["ron@example.com"]
    status, page, response = await open_link(links["ron@example.com"])
    assert status == 200 and response.mimetype == "text/html"
    assert "Deciding as <b>ron@example.com</b>" in page
    assert "Launch &lt;b&gt;now&lt;/b&gt;" in page and "<b>now</b>" not in page  # escaped
    for header, value in (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                          ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY")):
        assert response.headers[header] == value
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert (await get_runtime().service.get_session("link-1")).status == "pending"  # GET decided nothing

    status, page = await post_link(links["ron@example.com"], "reject", "needs numbers")
    assert status == 200 and "rejected" in page
    view = await get_runtime().service.get_session("link-1")
    (decision,) = view.decisions
    assert decision["result"] == {"approved": False, "feedback": "needs numbers"}
    assert decision["decided_by"] == "ron@example.com"
    audit = await get_runtime().service.audit("link-1")
    decided = next(r for r in audit.records if r.action == "decided")
    assert decided.actor == "ron@example.com" and decided.detail["via"] == "link"

    status, page = await post_link(links["ron@example.com"])  # the same link again
    assert status == 410 and "already decided by ron@example.com at" in page
    before = len(await refusals("link-1"))
    status, page, _ = await open_link(links["ron@example.com"])  # opening a used link writes nothing
    assert status == 410 and "already decided by ron@example.com" in page
    assert len(await refusals("link-1")) == before


async def test_a_link_cannot_decide_for_someone_who_is_not_an_approver(runtime: InMemoryEventPublisher,
                                                                     tmp_path: Path) -> None:
    await start(session_id="link-x", reviewers=["rita@example.com"])
    call_id = (await get_runtime().service.get_session("link-x")).pending_requests[0].call_id
    key = (tmp_path / "link-signing.key").read_text()
    mallory = LinkSigner([key], ttl_seconds=60).sign("link-x", call_id, "mallory@example.com")
    status, page = await post_link(mallory)
    assert status == 403 and "not an approver" in page
    (refusal,) = await refusals("link-x")
    assert refusal.actor == "mallory@example.com" and refusal.detail["via"] == "link"
    assert (await get_runtime().service.get_session("link-x")).status == "pending"


async def test_forged_tampered_and_malformed_links_write_nothing(runtime: InMemoryEventPublisher,
                                                                tmp_path: Path) -> None:
    await start(session_id="link-2", reviewers=["rita@example.com"])
    token = (await links_for("link-2"))["rita@example.com"]
    service = get_runtime().service
    call_id = (await service.get_session("link-2")).pending_requests[0].call_id
    payload, signature = token.split(".")
    tampered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    forged = LinkSigner(["attacker-key"], ttl_seconds=60).sign("link-2", call_id, "mallory")
    for bad in (forged, tampered, "garbage", token[:20], token + "é", "ö.ä", "." * 3000, token.replace(".", "..")):
        status, page = await post_link(bad)
        assert status == 403, (bad[:40], page)
        status, page, _ = await open_link(bad)
        assert status == 403, (bad[:40], page)
    assert await refusals("link-2") == []  # a token we did not sign cannot write into any audit
    assert (await service.get_session("link-2")).status == "pending"


async def test_expired_links_are_refused_and_refusals_are_rate_limited(runtime: InMemoryEventPublisher,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_REFUSAL_AUDIT_LIMIT", "3")
    reset_runtime()
    await start(session_id="link-3", reviewers=["rita@example.com"])
    service = get_runtime().service
    call_id = (await service.get_session("link-3")).pending_requests[0].call_id
    key = (tmp_path / "link-signing.key").read_text()
    stale = LinkSigner([key], ttl_seconds=60, clock=lambda: time.time() - 3600).sign("link-3", call_id,
                                                                                      "rita@example.com")
    status, page, _ = await open_link(stale)
    assert status == 410 and "expired" in page
    assert await refusals("link-3") == []  # opening never writes
    token = (await links_for("link-3"))["rita@example.com"]
    for _ in range(6):
        status, page = await post_link(token, "maybe")
        assert status == 400
    mallory = LinkSigner([key], ttl_seconds=60).sign("link-3", call_id, "mallory")
    for _ in range(6):
        status, _ = await post_link(mallory)
        assert status == 403
    assert len(await refusals("link-3")) == 3  # HITL_REFUSAL_AUDIT_LIMIT per request per hour
    assert (await service.get_session("link-3")).status == "pending"


async def test_a_sign_in_link_decides_as_whoever_signs_in(runtime: InMemoryEventPublisher,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_NOTIFY_DEFAULT_RECIPIENTS", "team@example.com")
    reset_runtime()
    await start(session_id="link-4", reviewers=["ron"])  # ron has no e-mail address: nobody named can be mailed
    links = await links_for("link-4")
    assert list(links) == ["team@example.com"]
    status, page, _ = await open_link(links["team@example.com"])
    assert status == 401 and "Sign in" in page
    status, page = await post_link(links["team@example.com"], **{"x-hitl-user": "rita"})
    assert status == 403 and "not an approver" in page
    status, page = await post_link(links["team@example.com"], **{"x-hitl-user": "ron"})
    assert status == 200
    (decision,) = (await get_runtime().service.get_session("link-4")).decisions
    assert decision["decided_by"] == "ron"


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
