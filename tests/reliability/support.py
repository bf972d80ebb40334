"""Shared pieces of the reliability tests: a retrying review client, a ledger of what the service
acknowledged, and the invariant checks run after the faults.

The client behaves like a real one: a connection refused/reset or a 503 is retried after a
short pause (a start with the same session id and input is idempotent; a decision retried after
its answer was lost gets either 200 or 409 "Request already handled" whose body carries the
recorded decision, which counts as acknowledged when it is the decision the client sent).

:func:`verify` reads every session back over HTTP and checks, precisely:

* every acknowledged decision is exactly once in the audit trail as ``decided`` with its
  ``call_id`` and result, and in the session's ``decisions`` with that result;
* no ``call_id`` is decided twice, a session's ``decisions`` has no duplicate ``call_id``;
* statuses are possible ones: pending sessions have a pending request, completed ones none and
  exactly one output (content-review), a content-review session's requests follow its decisions;
* every audit chain verifies;
* with a mailbox: every request ever created was e-mailed at least once, no recipient got the
  same event twice (each e-mail recipient gets a message of their own, whose ``Message-ID`` is
  per event and recipient), no e-mail names a request that does not exist.

Everyone acts as a person of the demo directory (devhost/demo-directory.json): the review
clients as a reviewer (``rita`` or ``ron``, of the ``reviewers`` role that decides a
content-review without named reviewers), the checks as ``ada`` (``auditors``: may read every
session and its audit) and the inbox check as the reviewer whose inbox it is.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

START = "/api/workflows/content-review/sessions"
ALLOWED_STATUSES = {"pending", "completed", "cancelled", "failed"}
APPROVE: dict[str, Any] = {"approved": True, "feedback": "ship it"}
REJECT: dict[str, Any] = {"approved": False, "feedback": "shorter"}

#: What a client retries: the host is down (refused/reset), restarting, or the store is down.
RETRYABLE_STATUSES = {502, 503, 504}

#: The ``reviewers`` role of the demo directory: either may decide any content-review here.
REVIEWERS = ("rita", "ron")
REVIEWER = REVIEWERS[0]
#: A neutral reader: the ``auditors`` role reads every session and audit, decides nothing.
AUDITOR = "ada"
#: The addresses the reviewers role is e-mailed at (one message each).
REVIEWER_EMAILS = frozenset({"rita@example.com", "ron@example.com"})


def as_user(user: str | None) -> dict[str, str]:
    """The dev-mode identity header naming ``user`` (none: an anonymous caller)."""
    return {"X-HITL-User": user} if user else {}


class CycleAborted(RuntimeError):
    """A cycle could not finish before its deadline (the service never answered usefully)."""


@dataclass(frozen=True)
class Ack:
    """A decision the service acknowledged: with 200, or with 409 naming this very decision."""

    session_id: str
    call_id: str
    result: dict[str, Any]
    status: int


@dataclass
class Ledger:
    """Everything the clients were told, shared by client threads."""

    started: dict[str, int] = field(default_factory=dict)  # session id -> 201 | 200
    attempted: set[str] = field(default_factory=set)
    acks: list[Ack] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # "POST start 201", "transport error", ...
    anomalies: list[str] = field(default_factory=list)
    cycles_completed: int = 0
    slowest_answer: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, key: str, elapsed: float = 0.0) -> None:
        with self.lock:
            self.answers[key] += 1
            self.slowest_answer = max(self.slowest_answer, elapsed)

    def anomaly(self, text: str) -> None:
        with self.lock:
            self.anomalies.append(text)


def problem_ok(response: httpx.Response) -> bool:
    """A 503 as the contract wants it: problem+json body and a Retry-After header."""
    return (response.status_code == 503
            and response.headers.get("content-type", "").startswith("application/problem+json")
            and response.headers.get("retry-after", "").isdigit()
            and response.json().get("status") == 503)


class ReviewClient:
    """Drives content-review sessions like a patient client: retries what may be retried."""

    def __init__(self, base_url: str, ledger: Ledger, *, cycle_timeout: float = 30.0,
                 pause: float = 0.05, on_503: Callable[[httpx.Response], None] | None = None,
                 user: str = REVIEWER) -> None:
        #: the reviewer who starts, reads and decides (content-review has no separation of duties)
        self.user = user
        self.http = httpx.Client(base_url=base_url, timeout=10.0, headers=as_user(user))
        self.ledger = ledger
        self.cycle_timeout = cycle_timeout
        self.pause = pause
        self.on_503 = on_503

    def close(self) -> None:
        self.http.close()

    def _send(self, label: str, method: str, url: str, deadline: float, **kwargs: Any) -> httpx.Response:
        """One logical call: retried on transport errors and 502/503/504 until ``deadline``."""
        while True:
            if time.monotonic() > deadline:
                raise CycleAborted(f"{label} {url}: no useful answer before the deadline")
            began = time.monotonic()
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                self.ledger.note(f"transport error ({type(exc).__name__})", time.monotonic() - began)
                time.sleep(self.pause)
                continue
            elapsed = time.monotonic() - began
            self.ledger.note(f"{label} {response.status_code}", elapsed)
            if response.status_code in RETRYABLE_STATUSES:
                if response.status_code == 503:
                    if not problem_ok(response):
                        self.ledger.anomaly(f"{label} {url}: 503 without problem+json/Retry-After: "
                                            f"{dict(response.headers)} {response.text[:200]}")
                    if self.on_503 is not None:
                        self.on_503(response)
                time.sleep(self.pause)
                continue
            if response.status_code >= 500:
                self.ledger.anomaly(f"{label} {url}: {response.status_code} {response.text[:300]}")
                time.sleep(self.pause)
                continue
            return response

    def view(self, session_id: str, deadline: float) -> dict[str, Any]:
        """The session view once it is not ``running`` (a GET finishes a continuation whose lease ran out)."""
        while True:
            response = self._send("GET session", "GET", f"/api/sessions/{session_id}", deadline)
            if response.status_code != 200:
                raise CycleAborted(f"GET {session_id}: {response.status_code} {response.text[:200]}")
            view: dict[str, Any] = response.json()
            if view["status"] != "running":
                return view
            self.ledger.note("session seen running (its continuation's process died)")
            time.sleep(0.2)

    def start(self, session_id: str, draft: str, deadline: float) -> dict[str, Any]:
        with self.ledger.lock:
            self.ledger.attempted.add(session_id)
        body = {"session_id": session_id, "input": {"draft": draft}}
        response = self._send("POST start", "POST", START, deadline, json=body)
        if response.status_code not in (200, 201):
            raise CycleAborted(f"start {session_id}: {response.status_code} {response.text[:200]}")
        with self.ledger.lock:
            self.ledger.started.setdefault(session_id, response.status_code)
        view: dict[str, Any] = response.json()
        return view if view["status"] != "running" else self.view(session_id, deadline)

    def decide(self, session_id: str, call_id: str, result: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Send one decision until it is acknowledged; answers the session view after it."""
        body = {"call_id": call_id, "result": result}
        response = self._send("POST decide", "POST", f"/api/sessions/{session_id}/responses", deadline, json=body)
        if response.status_code == 200:
            with self.ledger.lock:
                self.ledger.acks.append(Ack(session_id, call_id, result, 200))
            view: dict[str, Any] = response.json()
            return view if view["status"] != "running" else self.view(session_id, deadline)
        problem = response.json() if response.headers.get("content-type", "").endswith("json") else {}
        if response.status_code == 409 and problem.get("title") == "Request already handled":
            recorded = problem.get("decision") or {}
            if recorded.get("result") == result and recorded.get("call_id") == call_id:
                with self.ledger.lock:  # our own earlier attempt landed; its answer was lost
                    self.ledger.acks.append(Ack(session_id, call_id, result, 409))
                return self.view(session_id, deadline)
        raise CycleAborted(f"decide {session_id}/{call_id}: {response.status_code} {response.text[:300]}")

    def cycle(self, session_id: str, plan: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """start -> one decision per ``plan`` entry, each on the request the previous one left."""
        deadline = time.monotonic() + self.cycle_timeout
        view = self.start(session_id, f"draft of {session_id}", deadline)
        for result in plan:
            if not view["pending_requests"]:
                raise CycleAborted(f"{session_id} has no pending request to decide: {view['status']}")
            view = self.decide(session_id, view["pending_requests"][0]["call_id"], result, deadline)
        with self.ledger.lock:
            self.ledger.cycles_completed += 1
        return view


# -- after the faults -------------------------------------------------------------------------
@dataclass
class Report:
    sessions: int = 0
    requests_created: int = 0
    decisions_checked: int = 0
    emails: int = 0
    #: distinct (event, recipient) pairs e-mailed; ``emails - duplicates`` when nothing went twice
    deliveries: int = 0
    requests_mailed: int = 0
    recipients: Counter[str] = field(default_factory=Counter)  # address -> mails received
    duplicates: int = 0
    lost: int = 0
    phantom: int = 0
    dead_lettered: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    created_call_ids: dict[str, str] = field(default_factory=dict)  # call id -> session id
    lost_requests: list[tuple[str, str]] = field(default_factory=list)  # (session id, call id)


def settle(base_url: str, session_ids: Iterable[str], timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """GET every session until none is ``running`` (the next call finishes a dead continuation).

    Read as the auditor, who may read every session: a 404 means the session does not exist.
    """
    views: dict[str, dict[str, Any]] = {}
    todo = sorted(set(session_ids))
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=10.0, headers=as_user(AUDITOR)) as http:
        while todo:
            left: list[str] = []
            for sid in todo:
                response = http.get(f"/api/sessions/{sid}")
                if response.status_code == 404:
                    continue
                assert response.status_code == 200, f"GET {sid}: {response.status_code} {response.text[:300]}"
                view = response.json()
                views[sid] = view
                if view["status"] == "running":
                    left.append(sid)
            todo = left
            if todo:
                if time.monotonic() > deadline:
                    break  # verify() reports them
                time.sleep(0.5)
    return views


@dataclass
class Delivery:
    """What the local host delivered: the mailbox and the local Event Grid topic's counters."""

    mails: list[dict[str, Any]]
    topic: dict[str, Any]


def wait_for_quiet_mailbox(base_url: str, timeout: float = 30.0, quiet: float = 1.5) -> Delivery:
    """Wait until the local topic has nothing pending or in flight and the mailbox stopped growing.

    ``timeout`` bounds the wait for a quiet mailbox; while a delivery is still pending the wait goes
    on for two of the topic's longest retry delays more: a notification that failed again and again
    during a storm of kills (its claim held by a killed process) waits up to ``max_delay`` (30 s)
    for its next attempt, and giving up before it would count a delayed e-mail as a lost one.
    """
    started = time.monotonic()
    last = -1
    stable_since = started
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        while True:
            stats: dict[str, Any] = http.get("/api/_dev/eventgrid").json()
            mails: list[dict[str, Any]] = http.get("/api/_dev/mailbox").json()["messages"]
            busy = stats.get("pending", 0) or stats.get("in_flight", 0)
            if busy or len(mails) != last:
                last, stable_since = len(mails), time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                return Delivery(mails, stats)
            patience = timeout + (2 * float(stats.get("retry", {}).get("max_delay", 0)) if busy else 0)
            if time.monotonic() - started > patience:
                return Delivery(mails, stats)
            time.sleep(0.2)


def skipped_as_duplicate(log_text: str, lost: Iterable[tuple[str, str]]) -> list[str]:
    """Lost requests whose notification event the dispatcher skipped as "already delivered".

    That is the trace of a claim taken by a process that died before it sent the e-mail: the
    redelivery after the restart finds the claim and settles the event without sending.
    """
    from hitl_core.events.models import EventType, event_id

    found = []
    for session_id, call_id in lost:
        eid = event_id(session_id, call_id, EventType.REQUEST_CREATED)
        if f"event {eid} already delivered" in log_text:
            found.append(f"{session_id}/{call_id} (event {eid})")
    return found


def _header(mail: dict[str, Any], name: str) -> str | None:
    for key, value in (mail.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def verify(base_url: str, ledger: Ledger, views: dict[str, dict[str, Any]],
           delivery: Delivery | None, *, duplicates_allowed: bool = False,
           recipients: Collection[str] | None = None) -> Report:
    """Check every invariant over every session the clients touched (see the module docstring).

    ``duplicates_allowed``: a process died between a send and its confirmation (or the
    de-duplication store was down), so an e-mail may have been
    sent twice to a recipient (the dispatcher is at-least-once when it cannot record a delivery);
    copies must then carry the same ``Message-ID`` so that mail clients collapse them.
    ``recipients``: every address an e-mail may go to (None: any).
    """
    report = Report()
    bad = report.violations.append
    acks_by_session: dict[str, list[Ack]] = defaultdict(list)
    for ack in ledger.acks:
        acks_by_session[ack.session_id].append(ack)
    for sid in ledger.started:
        if sid not in views:
            bad(f"{sid}: start was acknowledged ({ledger.started[sid]}) but the session is gone")
    decided_anywhere: Counter[str] = Counter()
    with httpx.Client(base_url=base_url, timeout=10.0, headers=as_user(AUDITOR)) as http:
        for sid, view in sorted(views.items()):
            report.sessions += 1
            status = view["status"]
            report.statuses[status] += 1
            if status not in ALLOWED_STATUSES:
                bad(f"{sid}: impossible status {status!r} after recovery")
            pending = view["pending_requests"]
            decisions = view["decisions"]
            if status == "pending" and not pending:
                bad(f"{sid}: pending without a pending request")
            if status != "pending" and pending:
                bad(f"{sid}: {status} with pending requests {[p['call_id'] for p in pending]}")
            if status == "completed" and len(view["outputs"]) != 1:
                bad(f"{sid}: completed with {len(view['outputs'])} outputs")
            if status != "completed" and view["outputs"]:
                bad(f"{sid}: {status} with outputs {view['outputs']}")
            decision_ids = [d["call_id"] for d in decisions]
            if len(decision_ids) != len(set(decision_ids)):
                bad(f"{sid}: duplicate call ids in decisions {decision_ids}")
            # content-review: every decision but the last rejects; the open request is the next round
            answered = [d for d in decisions if d["outcome"] == "answered"]
            for d in answered[:-1]:
                if d["result"].get("approved") is not False:
                    bad(f"{sid}: an approval {d['call_id']} was followed by another decision")
            if status == "completed":
                if not answered or answered[-1]["result"].get("approved") is not True:
                    bad(f"{sid}: completed but its last decision is not an approval: {answered}")
                draft = f"draft of {sid}" + "".join("\n[revised: shorter]" for _ in answered[:-1])
                if view["outputs"] and view["outputs"][0] != {"published": draft}:
                    bad(f"{sid}: output {view['outputs']} is not the approved draft")
            if status == "pending" and pending and pending[0]["data"].get("iteration") != len(answered) + 1:
                bad(f"{sid}: request iteration {pending[0]['data'].get('iteration')} after {len(answered)} decisions")
            for call_id in [*decision_ids, *(p["call_id"] for p in pending)]:
                report.created_call_ids[call_id] = sid
            audit = http.get(f"/api/sessions/{sid}/audit", params={"verify": "true"}).json()
            if not (audit.get("verification") or {}).get("valid"):
                bad(f"{sid}: audit chain does not verify: {audit.get('verification')}")
            decided = [r for r in audit["records"] if r["action"] == "decided"]
            per_call = Counter(r["call_id"] for r in decided)
            decided_anywhere.update(per_call)
            if sorted(per_call) != sorted(d["call_id"] for d in answered):
                bad(f"{sid}: audit 'decided' {dict(per_call)} != session decisions {[d['call_id'] for d in answered]}")
            for ack in acks_by_session.get(sid, []):
                report.decisions_checked += 1
                records = [r for r in decided if r["call_id"] == ack.call_id]
                if len(records) != 1:
                    bad(f"{sid}: acknowledged decision {ack.call_id} is {len(records)}x in the audit")
                elif records[0]["detail"].get("result") != ack.result:
                    bad(f"{sid}: audit result {records[0]['detail'].get('result')} != acknowledged {ack.result}")
                taken = [d for d in decisions if d["call_id"] == ack.call_id]
                if len(taken) != 1 or taken[0]["result"] != ack.result:
                    bad(f"{sid}: acknowledged decision {ack.call_id} did not take effect once: {taken}")
    for call_id, count in decided_anywhere.items():
        if count > 1:
            bad(f"call id {call_id} has {count} 'decided' audit records")
    pending_ids = {p["call_id"] for view in views.values() for p in view["pending_requests"]}
    for reviewer in REVIEWERS:  # the reviewers role may decide every one of them
        inbox = _inbox_call_ids(base_url, reviewer)
        if inbox != pending_ids:
            bad(f"{reviewer}'s inbox lists {len(inbox)} requests, the sessions hold {len(pending_ids)} pending: "
                f"stale {sorted(inbox - pending_ids)[:5]}, missing {sorted(pending_ids - inbox)[:5]}")
    report.requests_created = len(report.created_call_ids)
    if delivery is not None:
        _verify_mails(report, delivery.mails, duplicates_allowed, recipients, delivery.topic)
        # a dead-lettered delivery is only a loss if nothing delivered the event later (a lost mail)
        report.dead_lettered = int(delivery.topic.get("failed", 0))
        if report.lost and report.dead_lettered:
            bad(f"{report.dead_lettered} event delivery(ies) were dead-lettered by the local topic: "
                f"{delivery.topic.get('recent_failures')}")
    return report


def _inbox_call_ids(base_url: str, reviewer: str) -> set[str]:
    """Every call id ``reviewer``'s inbox lists as pending (all pages)."""
    found: set[str] = set()
    continuation: str | None = None
    with httpx.Client(base_url=base_url, timeout=10.0, headers=as_user(reviewer)) as http:
        for _ in range(1000):
            params = {"status": "pending", "limit": "200", **({"continuation": continuation} if continuation else {})}
            response = http.get("/api/requests", params=params)
            assert response.status_code == 200, f"{reviewer}'s inbox: {response.status_code} {response.text[:300]}"
            page = response.json()
            found.update(item["call_id"] for item in page["items"])
            continuation = page.get("continuation")
            if not continuation:
                break
    return found


def _recipients(mail: dict[str, Any]) -> list[str]:
    """Who a mail was delivered to (the SMTP envelope; else its To header), lower-cased."""
    envelope = mail.get("envelope") or {}
    found = envelope.get("rcpt_tos") or mail.get("to") or []
    return sorted({str(r).strip().lower() for r in found}) or ["?"]


def _verify_mails(report: Report, mails: list[dict[str, Any]], duplicates_allowed: bool,
                  recipients: Collection[str] | None, topic: dict[str, Any]) -> None:
    """Each e-mail recipient gets a message of their own: deliveries are counted per event and recipient."""
    bad = report.violations.append
    report.emails = len(mails)
    message_ids: dict[tuple[str, str], set[str | None]] = defaultdict(set)
    by_delivery: Counter[tuple[str, str]] = Counter()  # (event id, recipient)
    by_call: Counter[str] = Counter()
    shared: dict[str, dict[str | None, set[tuple[str, ...]]]] = defaultdict(lambda: defaultdict(set))
    allowed = {r.lower() for r in recipients} if recipients is not None else None
    for mail in mails:
        event_id = _header(mail, "X-HITL-Event-Id") or _header(mail, "Message-ID") or "?"
        call_id = _header(mail, "X-HITL-Call-Id") or "?"
        session_id = _header(mail, "X-HITL-Session") or "?"
        message_id = _header(mail, "Message-ID")
        to = _recipients(mail)
        by_call[call_id] += 1
        shared[event_id][message_id].add(tuple(to))
        for recipient in to:
            by_delivery[(event_id, recipient)] += 1
            message_ids[(event_id, recipient)].add(message_id)
            report.recipients[recipient] += 1
            if allowed is not None and recipient not in allowed:
                bad(f"mail {event_id} went to {recipient}, who is not among {sorted(allowed)}")
        text = mail.get("text") or ""
        if f"Call id:   {call_id}" not in text or f"Session:   {session_id}" not in text:
            bad(f"mail {event_id}: its text does not name call {call_id} of session {session_id}")
        if report.created_call_ids.get(call_id) not in (session_id,):
            report.phantom += 1
            bad(f"mail {event_id} names request {call_id} of {session_id}, which no session created")
    for (event_id, recipient), count in by_delivery.items():
        if count > 1:
            report.duplicates += count - 1
            if not duplicates_allowed:
                bad(f"event {event_id} was e-mailed to {recipient} {count} times")
            elif len(message_ids[(event_id, recipient)]) != 1:
                bad(f"event {event_id} was e-mailed to {recipient} {count} times with different Message-IDs "
                    f"{message_ids[(event_id, recipient)]}")
    for event_id, by_message_id in shared.items():
        for message_id, addressed in by_message_id.items():
            if len(addressed) > 1:  # a mail client would drop one person's message as a copy of another's
                bad(f"event {event_id}: messages to {sorted(addressed)} share the Message-ID {message_id}")
    report.deliveries = len(by_delivery)
    for call_id, sid in sorted(report.created_call_ids.items(), key=lambda kv: kv[1]):
        if by_call[call_id] == 0:
            report.lost += 1
            report.lost_requests.append((sid, call_id))
            bad(f"request {call_id} of {sid} was never e-mailed (the topic still held "
                f"{topic.get('pending', 0)} pending and {topic.get('failed', 0)} failed deliveries)")
        else:
            report.requests_mailed += 1


def backend_env(request: Any, name: str) -> dict[str, str]:
    """Settings that select a checkpoint backend on the session's shared servers (tests/conftest.py)."""
    if name == "redis":
        return {"HITL_STORAGE": "redis", "HITL_REDIS_URL": request.getfixturevalue("redis_url")}
    if name == "cosmos":
        server = request.getfixturevalue("cosmos_server")
        return cosmos_env(server.endpoint, server.key)
    return {"HITL_STORAGE": "sqlite"}


def cosmos_env(endpoint: str, key: str) -> dict[str, str]:
    """The host on the Cosmos stand-in (or a proxy in front of it), in a database of its own."""
    return {"HITL_STORAGE": "cosmos", "HITL_COSMOS_ENDPOINT": endpoint, "HITL_COSMOS_KEY": key,
            "HITL_COSMOS_VERIFY_TLS": "false", "HITL_COSMOS_DATABASE": f"rel{uuid.uuid4().hex[:12]}"}
