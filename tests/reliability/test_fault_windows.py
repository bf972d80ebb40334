"""The narrow windows the load tests hit by chance, opened on purpose, one at a time.

Each test makes one fault happen at one known moment, so what the service does then is
deterministic:

* the host is SIGKILLed while it is sending a notification e-mail (the SMTP server accepted the
  connection but has not greeted yet): after the restart the request must still be e-mailed;
* the mail server is unreachable for a few seconds: the notification must go out once it is back
  (Event Grid retries a failed delivery for up to 24 hours);
* the Cosmos DB write of an audit record fails after the session document was written: the
  acknowledged decision must still be in the audit trail, and the chain must verify;
* the process dies between claiming a decision and committing its continuation (the random
  kills rarely land in that millisecond): the next read must finish the session once the lease
  ran out, and the decision must take effect exactly once.

People are the demo directory's (devhost/demo-directory.json): ``rita`` starts and decides (the
``reviewers`` role decides a content-review without named reviewers), and each of the role's two
members, rita and ron, is e-mailed a message of their own about every request. The claim window
needs a workflow that claims: content-review resumes optimistically (no claim write), so that test
uses expense-approval, which claims: ``ed`` claims an expense and his manager ``amy`` decides.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

import workflows
from hitl_core import SqliteCheckpointStorage
from hitl_core.directory import FileDirectory
from hitl_core.events.publisher import NullEventPublisher
from hitl_core.service import Caller, HitlService
from hitl_core.settings import Settings
from tests.e2e.host import ROOT, LocalHost
from tests.storage_cosmos.cosmos_proxy import CosmosProxy, SeenRequest
from tests.support.cosmos_server import CosmosStandIn

from .support import APPROVE, AUDITOR, REVIEWER, REVIEWER_EMAILS, START, Ledger, ReviewClient, as_user, cosmos_env
from .tcp_proxy import FaultyTcpProxy

RECIPIENTS = {"HITL_NOTIFY_DEFAULT_RECIPIENTS": "ops@example.test", "HITL_NOTIFY_CLAIM_LEASE_SECONDS": "2"}
#: The directory the local host uses by default (python -m devhost): the in-process service uses it too.
DEMO_DIRECTORY = ROOT / "devhost" / "demo-directory.json"


def recipients_of(mails: list[dict[str, Any]]) -> list[str]:
    """Every address the mails were delivered to, one entry per delivery, sorted."""
    return sorted(r.lower() for m in mails for r in (m.get("envelope") or {}).get("rcpt_tos") or m.get("to") or [])


def mails_for(host: LocalHost, session_id: str) -> list[dict[str, Any]]:
    return [m for m in host.mailbox() if (m.get("headers") or {}).get("X-HITL-Session") == session_id]


def notify_deliveries(host: LocalHost) -> dict[str, int]:
    stats = httpx.get(f"{host.base}/api/_dev/eventgrid", timeout=10).json()
    counts: dict[str, int] = stats["functions"].get("notify_reviewers", {})
    return counts


def wait_for_mail_or_settled(host: LocalHost, session_id: str, timeout: float) -> list[dict[str, Any]]:
    """The session's mails once every reviewer's arrived, or as soon as the topic holds no notification
    delivery any more (settled: nothing will come), or at the timeout (a delivery still waits for a retry)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mails = mails_for(host, session_id)
        if set(recipients_of(mails)) >= REVIEWER_EMAILS or not notify_deliveries(host).get("pending", 0):
            time.sleep(0.5)  # room for a duplicate to show up
            return mails_for(host, session_id)
        time.sleep(0.25)
    return mails_for(host, session_id)


@contextmanager
def silent_smtp_server() -> Iterator[int]:
    """A port whose TCP handshake completes (listen backlog) but that never greets: SMTP hangs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_email_being_sent_when_the_host_is_killed_is_still_sent_after_the_restart(tmp_path: Path) -> None:
    with silent_smtp_server() as smtp_port:
        host = LocalHost(tmp_path / "data", {**RECIPIENTS, "HITL_SMTP_HOST": "127.0.0.1",
                                             "HITL_SMTP_PORT": str(smtp_port), "HITL_SMTP_STARTTLS": "false"})
        host.start()
        try:
            with host.client() as client:
                assert client.post(START, json={"session_id": "mid-send", "input": {"draft": "x"}}).status_code == 201
            # the dispatcher has claimed the event and waits for the greeting; the outbox is cleared (1 s)
            time.sleep(2.0)
            assert notify_deliveries(host).get("pending", 0) >= 1
            host.kill()
            for name in ("HITL_SMTP_HOST", "HITL_SMTP_PORT", "HITL_SMTP_STARTTLS"):
                del host.extra_env[name]  # the restarted host sends to its own SMTP sink
            host.start()
            mails = wait_for_mail_or_settled(host, "mid-send", timeout=8.0)
            deliveries = notify_deliveries(host)
            log = host.log()
        finally:
            host.stop()
    skipped = "already delivered to email; nothing to do" in log
    assert mails or deliveries.get("pending", 0) >= 1, (
        "the request was never e-mailed and no delivery is left to retry: the redelivery after the restart "
        f"{'was settled as a duplicate because the killed process still held its claim' if skipped else 'ended'}"
        f" (topic: {deliveries})")
    # each reviewer at most once: a message of their own, not a copy per attempt
    to = recipients_of(mails)
    assert len(to) == len(set(to)) and set(to) <= REVIEWER_EMAILS, to


def test_mail_server_down_for_three_seconds_loses_no_notification(tmp_path: Path) -> None:
    proxy = FaultyTcpProxy(upstream_port=1)  # aimed at the host's SMTP sink once the host runs
    proxy.start()
    proxy.set_mode("drop")
    host = LocalHost(tmp_path / "data", {**RECIPIENTS, "HITL_SMTP_HOST": "127.0.0.1",
                                         "HITL_SMTP_PORT": str(proxy.port), "HITL_SMTP_STARTTLS": "false"})
    host.start()
    try:
        sink = httpx.get(f"{host.base}/api/_dev/mailbox", timeout=10).json()["smtp"]
        proxy.upstream = (sink["host"], int(sink["port"]))
        with host.client() as client:
            assert client.post(START, json={"session_id": "smtp-down", "input": {"draft": "x"}}).status_code == 201
        time.sleep(3.0)  # the mail server is unreachable
        proxy.set_mode("pass")
        mails = wait_for_mail_or_settled(host, "smtp-down", timeout=8.0)
        deliveries = notify_deliveries(host)
    finally:
        host.stop()
        proxy.stop()
    to = recipients_of(mails)
    print(f"\nsmtp outage: {proxy.counters.dropped} connections dropped; topic: {deliveries}; mails: {to}")
    assert proxy.counters.dropped >= 1
    assert to == sorted(REVIEWER_EMAILS), (
        f"a 3 s mail-server outage lost (or repeated) a notification, each reviewer must get it once: {to}; "
        f"the local topic ({deliveries}) must retry, as Event Grid retries a failed delivery for up to 24 h")


class ThreadedCosmosProxy:
    """:class:`CosmosProxy` (HTTP-level fault injection) on its own loop thread, for a host subprocess."""

    def __init__(self, upstream: str) -> None:
        self.proxy = CosmosProxy(upstream)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cosmos-proxy", daemon=True)

    def __enter__(self) -> CosmosProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self.proxy

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)


def is_audit_write(request: SeenRequest) -> bool:
    return b'"audit:' in request.body


def test_cosmos_audit_write_failing_after_the_session_write_keeps_the_decision_audited(
        tmp_path: Path, cosmos_server: CosmosStandIn) -> None:
    """The stand-in path writes the session, then its audit record (no atomic batch there).

    A transient failure of the audit write is retried inside the save, so the acknowledged
    decision keeps its record and the chain verifies. (In Azure both go in one atomic batch.)
    """
    threaded = ThreadedCosmosProxy(cosmos_server.endpoint)
    with threaded as proxy:
        env = cosmos_env(proxy.endpoint, cosmos_server.key)
        host = LocalHost(tmp_path / "data", {**env, **RECIPIENTS, "HITL_RESUME_LEASE_SECONDS": "1"})
        host.start()
        try:
            ledger = Ledger()
            client = ReviewClient(host.base, ledger)
            view = client.start("audit-gap", "draft of audit-gap", time.monotonic() + 30)
            call_id = view["pending_requests"][0]["call_id"]
            fault = threaded.call(proxy.fail, "upsert", 503, times=2, when=is_audit_write)
            with httpx.Client(base_url=host.base, timeout=60, headers=as_user(REVIEWER)) as http:
                first = http.post("/api/sessions/audit-gap/responses", json={"call_id": call_id, "result": APPROVE})
            threaded.call(proxy.faults.remove, fault)
            injected = sum(1 for r in proxy.requests if r.injected)
            with httpx.Client(base_url=host.base, timeout=30, headers=as_user(AUDITOR)) as http:
                after = http.get("/api/sessions/audit-gap").json()
                audit = http.get("/api/sessions/audit-gap/audit", params={"verify": "true"}).json()
            client.close()
        finally:
            host.stop()
    print(f"\ncosmos audit write: {injected} audit write(s) failed; first answer {first.status_code}; "
          f"audit: {[r['action'] for r in audit['records']]}")
    assert injected == 2 and first.status_code == 200, first.text
    assert after["status"] == "completed" and [d["call_id"] for d in after["decisions"]] == [call_id]
    decided = [r for r in audit["records"] if r["action"] == "decided"]
    assert [(r["call_id"], r["detail"].get("result"), r["actor"]) for r in decided] == [(call_id, APPROVE, REVIEWER)], (
        f"the acknowledged decision is not in the audit trail: {audit['records']}")
    assert audit["verification"]["valid"] is True, audit["verification"]


class ProcessKilled(BaseException):
    """Stands for SIGKILL: no ``except Exception`` handler runs, nothing after it happens."""


class DiesAfterFirstWrite:
    """A checkpoint storage whose process dies right after its first save lands (the claim)."""

    def __init__(self, inner: SqliteCheckpointStorage) -> None:
        self.inner = inner

    async def save(self, *args: Any, **kwargs: Any) -> str:
        await self.inner.save(*args, **kwargs)
        raise ProcessKilled

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


#: expense-approval (resume_mode "claim"): ed's expense, under the 1,000 that also needs finance
EXPENSE_START = "/api/workflows/expense-approval/sessions"
EXPENSE = {"employee": "ed", "amount": 200, "currency": "EUR", "description": "train to the client"}
EMPLOYEE, MANAGER, MANAGER_EMAIL = "ed", "amy", "amy@example.com"
EXPENSE_APPROVE: dict[str, Any] = {"approved": True, "comment": "fine"}


async def decide_and_die_after_the_claim(db: Path, call_id: str, lease: int) -> None:
    """The decision's process: its claim reaches the store, then it is killed mid-continuation."""
    storage = SqliteCheckpointStorage(db)
    service = HitlService(settings=Settings(resume_lease_seconds=lease), storage=DiesAfterFirstWrite(storage),
                          publisher=NullEventPublisher(), workflows=workflows.ALL,
                          directory=FileDirectory.from_path(DEMO_DIRECTORY))  # as the host: amy manages ed
    assert service.workflows["expense-approval"].resume_mode == "claim"
    try:
        await service.respond("claimed", call_id, EXPENSE_APPROVE, caller=Caller(user=MANAGER, source="test"))
    except ProcessKilled:
        return
    finally:
        await storage.close()
    raise AssertionError("the decision was not claimed with a first write")


def test_continuation_killed_after_its_claim_is_finished_by_the_next_read(tmp_path: Path) -> None:
    lease = 10  # long enough for the host's restart (it loads the app through the worker first) on a busy machine
    host = LocalHost(tmp_path / "data", {**RECIPIENTS, "HITL_RESUME_LEASE_SECONDS": str(lease)})
    host.start()
    try:
        with host.client(EMPLOYEE) as client:
            started = client.post(EXPENSE_START, json={"session_id": "claimed", "input": EXPENSE})
            assert started.status_code == 201, started.text
        call_id = started.json()["pending_requests"][0]["call_id"]
        # the request is announced (the manager e-mailed) before the crash, while it is still pending
        announced_by = time.monotonic() + 20
        while recipients_of(mails_for(host, "claimed")) != [MANAGER_EMAIL]:
            assert time.monotonic() < announced_by, f"not announced to the manager: {mails_for(host, 'claimed')}"
            time.sleep(0.2)
        host.kill()
        asyncio.run(decide_and_die_after_the_claim(host.data_dir / "checkpoints.db", call_id, lease))
        lease_ends = time.monotonic() + lease
        host.start()
        with host.client(MANAGER) as client:
            early = client.get("/api/sessions/claimed").json()
            again = client.post("/api/sessions/claimed/responses",
                                json={"call_id": call_id, "result": EXPENSE_APPROVE})
            time.sleep(max(0.0, lease_ends - time.monotonic()) + 0.2)
            view = client.get("/api/sessions/claimed").json()  # the lease ran out: this read finishes it
            audit = client.get("/api/sessions/claimed/audit", params={"verify": "true"}).json()
        time.sleep(1.0)  # room for a copy to show up (a republished outbox would be delivered by now)
        mails = mails_for(host, "claimed")
    finally:
        host.stop()
    assert early["status"] == "running"  # held by the dead claimer until its lease runs out
    assert again.status_code == 409 and again.json()["decision"]["result"] == EXPENSE_APPROVE, again.text
    assert view["status"] == "completed" and view["outputs"] == [
        {"status": "approved", "amount": 200, "decided_by": [MANAGER]}], view
    assert [(d["call_id"], d["result"]) for d in view["decisions"]] == [(call_id, EXPENSE_APPROVE)]
    assert [(r["action"], r["call_id"], r["actor"]) for r in audit["records"]] == [
        ("started", None, EMPLOYEE), ("decided", call_id, MANAGER)]
    assert audit["verification"]["valid"] is True
    # the request was announced once to the manager, not again after the crash
    assert len({m["headers"]["X-HITL-Event-Id"] for m in mails}) == 1, mails
    assert recipients_of(mails) == [MANAGER_EMAIL], recipients_of(mails)
