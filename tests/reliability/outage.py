"""One storage outage, told the same way for every backend: before, during, after.

* before: ``prepare`` acknowledges a set of sessions in three shapes (just started, rejected
  once, approved) and snapshots their views;
* during: background clients keep cycling (they retry 503s, as a client should) while
  ``probe`` calls the API directly and records every answer with its latency;
* after: ``finish`` stops the load, checks that every session acknowledged before the outage is
  exactly as it was, completes the pending ones, and runs the shared invariant checks.

Clients act as the reviewers ``rita`` and ``ron``, probes as ``rita`` (demo directory); the
recovery check reads as the auditor ``ada``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import httpx

from .support import (
    APPROVE,
    AUDITOR,
    REJECT,
    REVIEWER,
    REVIEWERS,
    START,
    CycleAborted,
    Ledger,
    Report,
    ReviewClient,
    as_user,
    problem_ok,
    settle,
    verify,
    wait_for_quiet_mailbox,
)


@dataclass(frozen=True)
class Probe:
    label: str
    status: int | None  # None: no HTTP answer (transport error)
    elapsed: float
    contract_503: bool  # 503 with problem+json and a Retry-After header


@dataclass
class Outage:
    base_url: str
    duplicates_allowed: bool = False  # the outage takes the notification de-duplication store down too
    recipients: Collection[str] | None = None  # every address an e-mail may go to (None: any)
    ledger: Ledger = field(default_factory=Ledger)
    snapshot: dict[str, dict[str, Any]] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)
    load_503s: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- before ------------------------------------------------------------------------------
    def prepare(self, prefix: str, count: int = 9) -> None:
        client = ReviewClient(self.base_url, self.ledger)
        try:
            for i in range(count):
                plan = ([], [REJECT], [APPROVE])[i % 3]
                client.cycle(f"{prefix}-pre-{i}", plan)
        finally:
            client.close()
        self.snapshot = settle(self.base_url, [f"{prefix}-pre-{i}" for i in range(count)])

    # -- during ------------------------------------------------------------------------------
    def _count_503(self, _response: httpx.Response) -> None:
        with self._lock:
            self.load_503s += 1

    def start_load(self, prefix: str, clients: int = 2) -> None:
        def loop(number: int) -> None:
            client = ReviewClient(self.base_url, self.ledger, cycle_timeout=30.0, pause=0.1, on_503=self._count_503,
                                  user=REVIEWERS[number % len(REVIEWERS)])
            try:
                cycle = 0
                while not self._stop.is_set():
                    plan = [REJECT, APPROVE] if cycle % 3 == 2 else [APPROVE]
                    try:
                        client.cycle(f"{prefix}-load-{number}-{cycle}", plan)
                    except CycleAborted as exc:
                        self.ledger.anomaly(str(exc))
                    cycle += 1
                    time.sleep(0.02)
            finally:
                client.close()

        self._threads = [threading.Thread(target=loop, args=(n,), name=f"load-{n}") for n in range(clients)]
        for thread in self._threads:
            thread.start()

    def stop_load(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "a load client did not stop"

    def probe(self, prefix: str, number: int, *, decide: bool = True) -> list[Probe]:
        """Read a session, start one, decide one (``decide``): each answer and how long it took."""
        pending = next(sid for sid, view in self.snapshot.items() if view["status"] == "pending")
        call_id = self.snapshot[pending]["pending_requests"][0]["call_id"]
        new = f"{prefix}-probe-{number}"
        calls: list[tuple[str, str, str, dict[str, Any] | None]] = [
            ("GET session", "GET", f"/api/sessions/{pending}", None),
            ("POST start", "POST", START, {"session_id": new, "input": {"draft": f"draft of {new}"}}),
            ("POST decide", "POST", f"/api/sessions/{pending}/responses", {"call_id": call_id, "result": APPROVE}),
        ][: 3 if decide else 2]
        found: list[Probe] = []
        with httpx.Client(base_url=self.base_url, timeout=30.0, headers=as_user(REVIEWER)) as http:
            for label, method, url, body in calls:
                began = time.monotonic()
                try:
                    response = http.request(method, url, json=body)
                except httpx.TransportError:
                    found.append(Probe(label, None, time.monotonic() - began, False))
                    continue
                found.append(Probe(label, response.status_code, time.monotonic() - began, problem_ok(response)))
                if label == "POST start" and body is not None and response.status_code in (200, 201):
                    with self.ledger.lock:  # a start that went through is checked like any other
                        self.ledger.attempted.add(body["session_id"])
                        self.ledger.started[body["session_id"]] = response.status_code
        self.probes.extend(found)
        return found

    def probe_for(self, prefix: str, seconds: float, *, decide: bool = True) -> list[Probe]:
        found: list[Probe] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found += self.probe(prefix, len(self.probes), decide=decide)
        return found

    # -- after -------------------------------------------------------------------------------
    def wait_until_serving(self, timeout: float = 30.0) -> float:
        """Seconds until a read of a prepared session answers 200 again (no restart, no help)."""
        began = time.monotonic()
        sid = next(iter(self.snapshot))
        with httpx.Client(base_url=self.base_url, timeout=30.0, headers=as_user(AUDITOR)) as http:
            while time.monotonic() - began < timeout:
                try:
                    if http.get(f"/api/sessions/{sid}").status_code == 200:
                        return time.monotonic() - began
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"the service did not recover within {timeout} s")

    def finish(self) -> Report:
        """Check the prepared sessions are intact, complete every pending one, verify everything
        (e-mails included: every request e-mailed, no recipient twice)."""
        self.stop_load()
        after = settle(self.base_url, self.snapshot)
        report_changed = [
            f"{sid}: changed during the outage: {view} -> {after.get(sid)}"
            for sid, view in self.snapshot.items()
            if {k: v for k, v in after.get(sid, {}).items() if k != "updated_at"}
            != {k: v for k, v in view.items() if k != "updated_at"}]
        client = ReviewClient(self.base_url, self.ledger)
        try:
            for sid, view in settle(self.base_url, self.ledger.attempted).items():
                if view["status"] == "pending":
                    client.decide(sid, view["pending_requests"][0]["call_id"], APPROVE, time.monotonic() + 30)
        finally:
            client.close()
        views = settle(self.base_url, self.ledger.attempted)
        report = verify(self.base_url, self.ledger, views, wait_for_quiet_mailbox(self.base_url),
                        duplicates_allowed=self.duplicates_allowed, recipients=self.recipients)
        report.violations += report_changed
        report.violations += [f"{sid}: could not be completed after the outage: {view['status']}"
                              for sid, view in views.items() if view["status"] != "completed"]
        return report

    def statuses(self, probes: list[Probe]) -> Counter[str]:
        return Counter(f"{p.label} {p.status}" for p in probes)
