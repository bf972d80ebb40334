"""Storage faults under load: the API answers 503 + Retry-After while the store is down, loses
nothing, and recovers by itself (no restart of the host, no help from the test).

* Redis: a dedicated ``redis-server`` with an append-only file (``appendfsync always``: a
  SIGKILL loses no acknowledged write), killed for about two seconds mid-load and started again
  on the same port and data folder.
* Cosmos: a loopback TCP proxy (:mod:`.tcp_proxy`) in front of the stand-in first drops every
  connection (the store is unreachable), then delays every request by 300 ms (slow but
  correct), then heals.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.host import LocalHost
from tests.support.cosmos_server import CosmosStandIn
from tests.support.redis_server import redis_server

from .outage import Outage, Probe
from .support import REVIEWER_EMAILS, Report, cosmos_env
from .tcp_proxy import FaultyTcpProxy

FALLBACK = "ops@example.test"
LEASE = {"HITL_RESUME_LEASE_SECONDS": "2", "HITL_NOTIFY_CLAIM_LEASE_SECONDS": "2",
         "HITL_NOTIFY_DEFAULT_RECIPIENTS": FALLBACK}
#: Who may be e-mailed: the reviewers role (rita, ron), one message each; the fallback address only
#: gets a request whose notification is handled after the request was decided (see the report).
RECIPIENTS = REVIEWER_EMAILS | {FALLBACK}
MAX_503_SECONDS = 5.0  # "no hang": an outage is reported within this, not after the client gives up


def unhandled_errors(log: str) -> list[str]:
    """Lines where the host logged an error nobody handled (a background task that raised)."""
    lines = log.splitlines()
    return [f"{line} {lines[i + 1][:220] if i + 1 < len(lines) else ''}" for i, line in enumerate(lines)
            if "Task exception was never retrieved" in line or "unexpected error" in line]


def summary(outage: Outage, report: Report) -> str:
    return (f"sessions: {report.sessions} {dict(report.statuses)}; decisions acknowledged: {len(outage.ledger.acks)}; "
            f"e-mails: {report.emails} {dict(report.recipients)}; duplicates: {report.duplicates}; "
            f"lost: {report.lost}; "
            f"dead-lettered deliveries: {report.dead_lettered}; violations: {len(report.violations)}")


def assert_outage_answers(probes: list[Probe]) -> None:
    assert probes, "no probe ran during the outage"
    wrong = [p for p in probes if p.status != 503 or not p.contract_503]
    assert not wrong, f"during the outage every call must be 503 + Retry-After + problem+json: {wrong}"
    slow = [p for p in probes if p.elapsed > MAX_503_SECONDS]
    assert not slow, f"503 took longer than {MAX_503_SECONDS} s: {slow}"


def test_redis_killed_mid_load_answers_503_then_recovers_with_nothing_lost(tmp_path: Path) -> None:
    persistent = ("--appendonly", "yes", "--appendfsync", "always")
    with redis_server(extra_args=persistent) as redis:
        host = LocalHost(tmp_path / "data", {"HITL_STORAGE": "redis", "HITL_REDIS_URL": redis.url, **LEASE})
        host.start()
        try:
            outage = Outage(host.base, duplicates_allowed=True,  # redis is the e-mail dedup store as well
                            recipients=RECIPIENTS)
            outage.prepare("redis")
            outage.start_load("redis")
            time.sleep(1.0)
            port = redis.port
            redis.kill()  # SIGKILL: a crash, as far as the service can tell
            down_at = time.monotonic()
            during = outage.probe_for("redis", 2.0)
            redis.start()  # same port, same folder: the append-only file brings the data back
            assert redis.port == port, "redis came back on another port; the service cannot find it"
            down_for = time.monotonic() - down_at
            recovered_in = outage.wait_until_serving()
            time.sleep(1.0)  # load on the recovered store
            report = outage.finish()
        finally:
            host.stop()
    unhandled = unhandled_errors(host.log())

    print(f"\nredis: faults injected: 1 kill ({down_for:.1f} s down); 503s observed: "
          f"{sum(p.status == 503 for p in during)} probes (slowest {max(p.elapsed for p in during):.1f} s) + "
          f"{outage.load_503s} load; recovered in {recovered_in:.1f} s; {summary(outage, report)}")
    print(f"  probe answers: {dict(outage.statuses(during))}; load answers: {dict(outage.ledger.answers)}")
    assert_outage_answers(during)
    assert not outage.ledger.anomalies, outage.ledger.anomalies[:20]  # no 500, no cycle left unfinished
    assert not report.violations, "\n".join(report.violations[:40])
    assert outage.ledger.cycles_completed > 0
    assert not unhandled, f"{len(unhandled)} unhandled error(s) in the host log, e.g. {unhandled[:2]}"


def test_cosmos_dropped_then_delayed_connections(tmp_path: Path, cosmos_server: CosmosStandIn) -> None:
    proxy = FaultyTcpProxy(cosmos_server.port)
    proxy.start()
    env = cosmos_env(f"http://127.0.0.1:{proxy.port}", cosmos_server.key)
    host = LocalHost(tmp_path / "data", {**env, **LEASE})
    host.start()
    try:
        outage = Outage(host.base, recipients=RECIPIENTS)
        outage.prepare("cosmos")
        outage.start_load("cosmos")
        time.sleep(1.0)

        proxy.set_mode("drop")
        dropped = outage.probe_for("cosmos", 3.0)

        proxy.set_mode("delay", 0.3)
        recovered_in = outage.wait_until_serving()
        delayed = outage.probe_for("cosmos", 3.0, decide=False)

        proxy.set_mode("pass")
        time.sleep(1.0)
        report = outage.finish()
    finally:
        host.stop()
        proxy.stop()
    unhandled = unhandled_errors(host.log())

    counters = proxy.counters
    print(f"\ncosmos: faults injected: {counters.dropped} connections dropped, {counters.delayed} requests "
          f"delayed 300 ms; 503s observed: {sum(p.status == 503 for p in dropped)} probes (slowest "
          f"{max(p.elapsed for p in dropped):.1f} s) + {outage.load_503s} load; recovered in {recovered_in:.1f} s; "
          f"{summary(outage, report)}")
    print(f"  dropped: {dict(outage.statuses(dropped))}; delayed: {dict(outage.statuses(delayed))}; "
          f"load answers: {dict(outage.ledger.answers)}")
    assert counters.dropped > 0 and counters.delayed > 0
    assert_outage_answers(dropped)
    assert delayed and all(p.status in (200, 201) for p in delayed), delayed  # slower, but correct
    assert max(p.elapsed for p in delayed) >= 0.3  # the delay was really in the path
    assert not outage.ledger.anomalies, outage.ledger.anomalies[:20]
    assert not report.violations, "\n".join(report.violations[:40])
    assert outage.ledger.cycles_completed > 0
    assert not unhandled, f"{len(unhandled)} unhandled error(s) in the host log, e.g. {unhandled[:2]}"
