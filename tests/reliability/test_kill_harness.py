"""SIGKILL the local host at random moments under a load of start -> decide cycles, then check.

The host (SQLite backend, e-mail to the local SMTP sink, whose mailbox survives restarts in
``data_dir/mailbox.jsonl``) serves ``CLIENTS`` client threads, each running content-review cycles
(start a fresh session, approve; every few cycles reject once first, so the session has a second
request). A fixed seed chooses when the host is killed (every 1-3 s, ``KILLS`` times) and how
long it stays down; each time it is restarted on the same data folder and port. Clients retry
what the kill cut off, as a real client would.

After the last restart the clients stop, every session is read back (a GET publishes what an
outbox still holds and finishes a continuation whose process died once its lease ran out), the
mailbox is left to settle, and :func:`tests.reliability.support.verify` checks the invariants.
A one-line summary is printed (run with ``-s`` to see it) and written to ``last_run.json`` in the
test's tmp folder.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from tests.e2e.host import LocalHost

from .support import (
    APPROVE,
    REJECT,
    REVIEWER_EMAILS,
    REVIEWERS,
    CycleAborted,
    Ledger,
    ReviewClient,
    settle,
    skipped_as_duplicate,
    verify,
    wait_for_quiet_mailbox,
)

SEED = 20261125
CLIENTS = 8
KILLS = 8
LEASE_SECONDS = 2  # HITL_RESUME_LEASE_SECONDS: how soon a GET may finish a killed continuation
FALLBACK = "ops@example.test"  # HITL_NOTIFY_DEFAULT_RECIPIENTS


def client_loop(number: int, base_url: str, ledger: Ledger, stop: threading.Event) -> None:
    rng = random.Random(SEED * 100 + number)  # which cycles reject first: fixed per client
    client = ReviewClient(base_url, ledger, cycle_timeout=30.0, user=REVIEWERS[number % len(REVIEWERS)])
    try:
        cycle = 0
        while not stop.is_set():
            session_id = f"kill-{number}-{cycle}"
            cycle += 1
            plan = [REJECT, APPROVE] if rng.random() < 0.3 else [APPROVE]
            try:
                client.cycle(session_id, plan)
            except CycleAborted as exc:
                ledger.anomaly(str(exc))
    finally:
        client.close()


def test_sigkill_under_load_loses_nothing_and_applies_each_decision_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    host = LocalHost(tmp_path / "data", {
        "HITL_NOTIFY_DEFAULT_RECIPIENTS": FALLBACK,
        "HITL_RESUME_LEASE_SECONDS": str(LEASE_SECONDS),
        "HITL_NOTIFY_CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
    })
    host.start()
    ledger = Ledger()
    stop = threading.Event()
    workers = [threading.Thread(target=client_loop, args=(n, host.base, ledger, stop), name=f"client-{n}")
               for n in range(CLIENTS)]
    kills = 0
    began = time.monotonic()
    try:
        for worker in workers:
            worker.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(1.0, 3.0))
            host.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.3))  # down for a moment: clients see connection refused
            host.start()
        time.sleep(1.5)  # load on the last incarnation too
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        assert not any(w.is_alive() for w in workers), "a client did not stop"
        load_seconds = time.monotonic() - began

        views = settle(host.base, ledger.attempted)  # polls until every killed continuation's lease ran out
        delivery = wait_for_quiet_mailbox(host.base)
        # A SIGKILL between an SMTP send and its confirmation makes the redelivery send again:
        # such a re-send must carry the same Message-ID (the receiver's de-duplication key).
        # Each of the reviewers role (rita, ron) gets a message of their own; the fallback address only
        # a request whose notification is handled once the request is decided.
        report = verify(host.base, ledger, views, delivery, duplicates_allowed=True,
                        recipients=REVIEWER_EMAILS | {FALLBACK})
    finally:
        stop.set()
        host.stop()
    skipped = skipped_as_duplicate(host.log(), report.lost_requests)

    summary = (f"kills survived: {kills}, cycles checked: {ledger.cycles_completed}, "
               f"decisions acknowledged: {len(ledger.acks)}, e-mails: {report.emails} "
               f"({report.deliveries} event+recipient deliveries), "
               f"re-sent after a kill (same Message-ID): {report.duplicates}, lost: {report.lost}")
    details = {
        "summary": summary, "seed": SEED, "clients": CLIENTS, "kills": kills, "load_seconds": round(load_seconds, 1),
        "sessions": report.sessions, "statuses": dict(report.statuses), "requests_created": report.requests_created,
        "cycles_completed": ledger.cycles_completed, "decisions_acknowledged": len(ledger.acks),
        "acknowledged_with_409": sum(1 for a in ledger.acks if a.status == 409),
        "decisions_checked": report.decisions_checked, "emails": report.emails, "duplicates": report.duplicates,
        "deliveries": report.deliveries, "requests_mailed": report.requests_mailed,
        "recipients": dict(report.recipients),
        "lost": report.lost, "phantom": report.phantom, "dead_lettered": report.dead_lettered,
        "slowest_answer_s": round(ledger.slowest_answer, 2), "answers": dict(ledger.answers),
        "anomalies": ledger.anomalies[:50], "violations": report.violations[:100],
        "lost_skipped_as_already_delivered": skipped,
    }
    (tmp_path / "last_run.json").write_text(json.dumps(details, indent=2))
    print(f"\n{summary}")
    print(f"  answers: {dict(sorted(ledger.answers.items()))}")
    print(f"  e-mails per recipient: {dict(sorted(report.recipients.items()))}")
    print(f"  statuses: {dict(report.statuses)}; requests created: {report.requests_created}; "
          f"acknowledged via 409: {details['acknowledged_with_409']}; details in {tmp_path / 'last_run.json'}")

    assert kills == KILLS
    assert ledger.cycles_completed >= 50, f"too little load to mean anything: {details}"
    assert not ledger.anomalies, "\n".join(ledger.anomalies[:30])
    assert not report.violations, (
        f"{len(report.violations)} invariant violation(s):\n" + "\n".join(report.violations[:40])
        + f"\n{len(skipped)} of the {report.lost} lost notifications were settled by a redelivery after a restart "
        "as 'already delivered' (the killed process had claimed them but not sent them): " + ", ".join(skipped[:5]))
    assert report.lost == 0
    # at least once per request, and at most once per event and recipient after de-duplication by Message-ID
    assert report.requests_mailed == report.requests_created
    assert report.emails - report.duplicates == report.deliveries
