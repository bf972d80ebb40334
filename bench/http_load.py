"""Load the local host over HTTP against a floor measured in the same run.

Starts ``python -m devhost`` (the server of ``make run``) on a free loopback port with a fresh
data folder, and next to it the floor (:mod:`bench.floor`: a plain aiohttp server doing only one
durable SQLite write and one Event Grid publish per start, one read and one conditional write per
decision, through the same devhost's local Event Grid topic and, with ``--notify``, one e-mail per
start to the same SMTP sink). The SAME aiohttp load clients (same code, concurrency and duration)
drive each server in turn — floor, then hitl, per round — doing start -> decision cycles; between
runs every published event is delivered (the topic drained) so no run pays for another's backlog.
Reported: cycles/s, p50/p99 of each call, the server's CPU per cycle and peak memory, each as a
ratio to the floor of the same run. Then 10,000 more sessions are stored (through the library
into hitl's SQLite file, straight into the floor's) and both run again, to show latency does not
grow with the store. Everything stays on 127.0.0.1 and stops by itself.

The load acts as people of the demo directory (devhost/demo-directory.json), named by the dev
``X-HITL-User`` header: an author starts each content-review (``--author``, default ``mona``) and
a member of the ``reviewers`` role decides it (``--reviewer``, default ``rita``); anonymous callers
may start but not decide. A call that is refused counts as an error in the results.

E-mail: without ``--notify`` the host runs with ``HITL_SMTP_HOST=off`` (the local host then mails
nothing, not even to its sink) and the run checks the mailbox is empty at the end; with
``--notify`` both servers mail :mod:`bench.mail_sink`, a stand-in relay in a process of its own (in
Azure the relay is outside the app, so neither server pays for the receiving side): hitl's e-mails
(one per reviewer per request: rita and ron) and the floor's (one per start, addressed to both
reviewers).

Goal (issue "Service cost you can reproduce"): hitl >= 0.5x the floor's cycles/s and <= 2x its p99.

Rounds: the floor and hitl take turns, ``--rounds`` pairs per phase, and every ratio reported is the
median of the per-round ratios. On a shared 2-core machine one pair's ratio moves by up to a fifth
(the floor's own cycles/s went from 232 to 444 in one day), so one pair is not evidence.

Run: ``python -m bench.http_load [--seconds 20] [--clients 32] [--preload 10000] [--rounds 3] [--notify]
[--author mona] [--reviewer rita]``
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
#: The people the local host knows (what ``python -m devhost`` uses by default; pinned here).
DIRECTORY = {"HITL_DIRECTORY": "file", "HITL_DIRECTORY_FILE": str(ROOT / "devhost" / "demo-directory.json")}
AUTHOR = "mona"  # starts the reviews (anyone may start; the author may then read the session)
REVIEWER = "rita"  # of the ``reviewers`` role, which decides a content-review without named reviewers
#: The issue's goal, as ratios to the floor measured in the same run.
GOAL_THROUGHPUT = 0.5  # hitl cycles/s >= 0.5 x the floor's
GOAL_P99 = 2.0  # hitl p99 (start and decide) <= 2 x the floor's
FLOOR_SENDER = "floor@hitl.localhost"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def as_user(user: str) -> dict[str, str]:
    """The dev-mode identity header (``HITL_AUTH_MODE=dev``, the local host's default)."""
    return {"X-HITL-User": user}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _get_json(url: str, timeout: float = 30) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def _wait_until_idle(url: str, busy_key: str, limit_s: float, poll_s: float) -> float:
    """Seconds until ``url`` answers with a falsy ``busy_key`` (or ``limit_s`` passed)."""
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        if not _get_json(url).get(busy_key):
            break
        time.sleep(poll_s)
    return round(time.monotonic() - began, 1)


def environment_without_hitl_settings() -> dict[str, str]:
    """This process's environment minus every ``HITL_`` setting: each server of a run gets only the
    settings the run gives it, whatever the shell that started the benchmark had set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], what: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


def _stop(proc: subprocess.Popen[bytes]) -> float:
    peak = peak_rss_mib(proc.pid)
    proc.send_signal(2)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    return peak


class Host:
    """``python -m devhost`` serving function_app:app on a free port, with its SMTP sink on another."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.smtp_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def topic_url(self) -> str:
        return f"{self.base}/runtime/eventgrid/topics/local/api/events"

    @property
    def topic_key_file(self) -> Path:
        return self.data_dir / "eventgrid-topic.key"

    def start(self) -> None:
        env = environment_without_hitl_settings()
        env.update({"HITL_DATA_DIR": str(self.data_dir), "HITL_PORT": str(self.port), **DIRECTORY, **self.env})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--app", "function_app:app", "--no-access-log", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--smtp-port", str(self.smtp_port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(self.data_dir / "host.log", "ab"),
        )
        _wait_healthy(f"{self.base}/api/health", self.proc, "devhost")

    def drain_events(self, limit_s: float = 300) -> float:
        """Seconds until the local topic has delivered every event (notifications included)."""
        return _wait_until_idle(f"{self.base}/api/_dev/eventgrid", "pending", limit_s, 1.0)

    def event_stats(self) -> dict[str, Any]:
        stats = _get_json(f"{self.base}/api/_dev/eventgrid")
        return {k: stats.get(k) for k in ("events", "delivered", "failed", "pending")}

    def mails(self) -> dict[str, int]:
        """Messages in the SMTP sink (GET /api/_dev/mailbox), hitl's and the floor's apart."""
        data = _get_json(f"{self.base}/api/_dev/mailbox", timeout=60)
        messages = data["messages"] if isinstance(data, dict) else data
        floor = sum(1 for m in messages if FLOOR_SENDER in str(m.get("envelope", {}).get("mail_from", "")))
        return {"total": len(messages), "hitl": len(messages) - floor, "floor": floor}

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def stop(self) -> float:
        assert self.proc is not None
        return _stop(self.proc)


class MailRelay:
    """``python -m bench.mail_sink``: the outside mail relay both servers send to with ``--notify``.

    In a process of its own, so the relay's side of SMTP is in neither server's CPU (in Azure the
    relay is a service of its own), as the floor's e-mails already were not in the floor's."""

    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.smtp_port = free_port()
        self.work_dir = work_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = environment_without_hitl_settings()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.mail_sink", "--port", str(self.port), "--smtp-port", str(self.smtp_port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(self.work_dir / "mail_sink.log", "ab"))
        _wait_healthy(f"http://127.0.0.1:{self.port}/stats", self.proc, "mail sink")

    def app_settings(self) -> dict[str, str]:
        """How the local host's app reaches it (plain SMTP on loopback)."""
        return {"HITL_SMTP_HOST": "127.0.0.1", "HITL_SMTP_PORT": str(self.smtp_port), "HITL_SMTP_STARTTLS": "false"}

    def mails(self) -> dict[str, int]:
        """Messages received, hitl's and the floor's apart (by envelope sender)."""
        by_sender: dict[str, int] = _get_json(f"http://127.0.0.1:{self.port}/stats")["by_sender"]
        floor = sum(n for sender, n in by_sender.items() if FLOOR_SENDER in sender)
        total = sum(by_sender.values())
        return {"total": total, "hitl": total - floor, "floor": floor}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _stop(self.proc)


class FloorServer:
    """``python -m bench.floor`` publishing to the host's local topic (and mailing its sink)."""

    def __init__(self, work_dir: Path, host: Host, *, smtp_port: int | None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.work_dir = work_dir
        self.db = work_dir / "floor.db"
        self.host = host
        self.smtp_port = smtp_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "bench.floor", "--port", str(self.port), "--db", str(self.db),
               "--topic-endpoint", self.host.topic_url, "--topic-key-file", str(self.host.topic_key_file)]
        if self.smtp_port:
            cmd += ["--smtp-port", str(self.smtp_port)]
        env = environment_without_hitl_settings()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.work_dir / "floor.log", "ab"))
        _wait_healthy(f"{self.base}/api/health", self.proc, "floor")

    def drain_mails(self, limit_s: float = 600) -> float:
        """Seconds until the floor has sent every e-mail it queued."""
        return _wait_until_idle(f"{self.base}/api/health", "mails_in_flight", limit_s, 0.5)

    def preload(self, count: int) -> None:
        import sqlite3

        db = sqlite3.connect(self.db, isolation_level=None)
        db.execute("BEGIN")
        db.executemany("INSERT INTO sessions(session_id, version, doc) VALUES (?, 1, ?)",
                       ((f"stored-{i}", json.dumps({"session_id": f"stored-{i}", "status": "pending",
                                                    "input": {"draft": f"stored draft {i}"},
                                                    "pending_requests": [{"call_id": f"c{i}"}]}))
                        for i in range(count)))
        db.execute("COMMIT")
        db.close()

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def stop(self) -> float:
        assert self.proc is not None
        return _stop(self.proc)


async def run_load(base: str, clients: int, seconds: float, tag: str, *, author: str = AUTHOR,
                   reviewer: str = REVIEWER) -> dict[str, Any]:
    """The load clients: ``clients`` concurrent start -> decision loops for ``seconds`` against ``base``."""
    starts: list[float] = []
    decisions: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base_url=base, connector=connector) as http:

        async def worker(worker_id: int) -> int:
            cycles = 0
            while time.monotonic() < stop_at:
                session_id = f"{tag}-{worker_id}-{cycles}"
                t0 = time.perf_counter()
                async with http.post("/api/workflows/content-review/sessions", headers=as_user(author),
                                     json={"session_id": session_id, "input": {"draft": "Load test draft"}}) as r:
                    body = await r.json()
                    if r.status != 201:
                        errors[f"start {r.status}"] = errors.get(f"start {r.status}", 0) + 1
                        continue
                t1 = time.perf_counter()
                call_id = body["pending_requests"][0]["call_id"]
                async with http.post(f"/api/sessions/{session_id}/responses", headers=as_user(reviewer),
                                     json={"call_id": call_id, "result": {"approved": True}}) as r:
                    await r.read()
                    if r.status != 200:
                        errors[f"decide {r.status}"] = errors.get(f"decide {r.status}", 0) + 1
                        continue
                t2 = time.perf_counter()
                starts.append((t1 - t0) * 1000)
                decisions.append((t2 - t1) * 1000)
                cycles += 1
            return cycles

        began = time.perf_counter()
        total = sum(await asyncio.gather(*(worker(i) for i in range(clients))))
        elapsed = time.perf_counter() - began
    return {
        "clients": clients,
        "author": author,
        "reviewer": reviewer,
        "seconds": round(elapsed, 2),
        "cycles": total,
        "cycles_per_s": round(total / elapsed, 1),
        "start_p50_ms": round(statistics.median(starts), 2) if starts else None,
        "start_p99_ms": round(percentile(starts, 0.99), 2),
        "decide_p50_ms": round(statistics.median(decisions), 2) if decisions else None,
        "decide_p99_ms": round(percentile(decisions, 0.99), 2),
        "errors": errors,
    }


async def preload(data_dir: Path, count: int, author: str = AUTHOR) -> float:
    """Store ``count`` pending sessions through the library (same SQLite file and directory the host uses),
    each started by ``author``."""
    os.environ["HITL_DATA_DIR"] = str(data_dir)
    os.environ["HITL_STORAGE"] = "sqlite"
    os.environ["HITL_AUTH_MODE"] = "dev"
    os.environ.update(DIRECTORY)
    sys.path.insert(0, str(ROOT))
    import workflows
    from hitl_core.access import Caller
    from hitl_core.checkpoint.factory import storage_from_settings
    from hitl_core.directory import directory_from_settings
    from hitl_core.events import NullEventPublisher
    from hitl_core.service import HitlService
    from hitl_core.settings import Settings

    settings = Settings.from_env()
    service = HitlService(settings=settings, storage=storage_from_settings(settings), publisher=NullEventPublisher(),
                          workflows=workflows.ALL, directory=directory_from_settings(settings))
    caller = Caller(user=author, source="127.0.0.1")
    began = time.perf_counter()
    for i in range(count):
        await service.start("content-review", input={"draft": f"stored draft {i}"}, session_id=f"stored-{i}",
                            caller=caller)
    await service.close()
    return time.perf_counter() - began


def measured(name: str, cpu_of: list[Any], load: Any, drain: Any) -> dict[str, Any]:
    """Run ``load`` (a coroutine factory), then ``drain`` (until every event and e-mail of the run is
    delivered); adds the servers' CPU per cycle during the load and until drained (deferred deliveries
    included), and the cycles per second counted until drained."""
    before = [f() for f in cpu_of]
    result: dict[str, Any] = asyncio.run(load())
    during = sum(f() for f in cpu_of) - sum(before)
    drained_after_s = drain()
    used = sum(f() for f in cpu_of) - sum(before)
    cycles = result["cycles"]
    result["server"] = name
    result["drained_after_s"] = drained_after_s
    result["sustained_cycles_per_s"] = round(cycles / (result["seconds"] + drained_after_s), 1)
    result["server_cpu_s"] = round(used, 2)
    result["server_cpu_ms_per_cycle_during_load"] = round(1000 * during / cycles, 3) if cycles else None
    result["server_cpu_ms_per_cycle"] = round(1000 * used / cycles, 3) if cycles else None
    return result


KEYS = ("cycles_per_s", "sustained_cycles_per_s", "start_p50_ms", "start_p99_ms", "decide_p50_ms", "decide_p99_ms",
        "server_cpu_ms_per_cycle", "server_cpu_ms_per_cycle_during_load")


def ratios(hitl: dict[str, Any], floor: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in KEYS:
        a, b = hitl.get(key), floor.get(key)
        out[key] = round(a / b, 2) if a is not None and b else None
    return out


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds of one server: medians of the per-round figures."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[-1])
    for key in KEYS:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    out["cycles"] = sum(r["cycles"] for r in runs)
    out["rounds"] = len(runs)
    return out


def compare(phase: str, host: Host, floor: FloorServer, ns: argparse.Namespace, tag: str,
            people: dict[str, str]) -> dict[str, Any]:
    """``ns.rounds`` x (floor run, hitl run), each after the topic is drained; per-round ratios."""
    floor_runs, hitl_runs, round_ratios = [], [], []
    for r in range(ns.rounds):
        host.drain_events()
        floor.drain_mails()
        floor_runs.append(measured("floor", [floor.cpu, host.cpu], lambda r=r: run_load(
            floor.base, ns.clients, ns.seconds, f"{tag}f{r}", **people),
            lambda: floor.drain_mails() + host.drain_events()))
        hitl_runs.append(measured("hitl", [host.cpu], lambda r=r: run_load(
            host.base, ns.clients, ns.seconds, f"{tag}h{r}", **people), lambda: host.drain_events(limit_s=900)))
        round_ratios.append(ratios(hitl_runs[-1], floor_runs[-1]))
        print(f"  [{phase}] round {r + 1}: floor {floor_runs[-1]['cycles_per_s']} cycles/s, "
              f"hitl {hitl_runs[-1]['cycles_per_s']} cycles/s ({round_ratios[-1]['cycles_per_s']}x)", flush=True)
    ratio: dict[str, float | None] = {}
    for k in KEYS:
        values = [v for x in round_ratios if (v := x[k]) is not None]
        ratio[k] = round(statistics.median(values), 2) if values else None
    return {"floor": pooled(floor_runs), "hitl": pooled(hitl_runs), "ratio_hitl_to_floor": ratio,
            "ratios_per_round": round_ratios}


def goal(ratio: dict[str, Any]) -> dict[str, Any]:
    throughput, sustained = ratio["cycles_per_s"], ratio["sustained_cycles_per_s"]
    p99 = max(ratio["start_p99_ms"] or 0, ratio["decide_p99_ms"] or 0)
    return {"throughput_ratio": throughput, "sustained_ratio": sustained, "worst_p99_ratio": p99,
            "throughput_met": throughput is not None and throughput >= GOAL_THROUGHPUT,
            "sustained_met": sustained is not None and sustained >= GOAL_THROUGHPUT,
            "p99_met": p99 <= GOAL_P99}


def report(results: dict[str, Any]) -> None:
    meta = results["meta"]
    print(f"\n{meta['date']} · `{meta['command']}` · {meta['clients']} clients x {meta['seconds']} s per run, "
          f"{meta['rounds']} round(s) · e-mail {'on' if meta['notify'] else 'off'} · load average "
          f"{meta['loadavg_before']} -> {meta['loadavg_after']}")
    print("\n| store | server | cycles/s | sustained cycles/s (until all events and e-mails delivered) "
          "| start p50 / p99 (ms) | decide p50 / p99 (ms) | server CPU ms per cycle, until drained (during the load) "
          "| peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for phase, data in results["phases"].items():
        f, h, r = data["floor"], data["hitl"], data["ratio_hitl_to_floor"]
        print(f"| {phase} | floor | {f['cycles_per_s']} (1.0x) | {f['sustained_cycles_per_s']} (1.0x) | "
              f"{f['start_p50_ms']} / {f['start_p99_ms']} | "
              f"{f['decide_p50_ms']} / {f['decide_p99_ms']} | {f['server_cpu_ms_per_cycle']} "
              f"({f['server_cpu_ms_per_cycle_during_load']}) | "
              f"{f.get('peak_rss_mib')} |")
        print(f"| {phase} | hitl | {h['cycles_per_s']} ({r['cycles_per_s']}x) | {h['sustained_cycles_per_s']} "
              f"({r['sustained_cycles_per_s']}x) | {h['start_p50_ms']} "
              f"({r['start_p50_ms']}x) / {h['start_p99_ms']} ({r['start_p99_ms']}x) | {h['decide_p50_ms']} "
              f"({r['decide_p50_ms']}x) / {h['decide_p99_ms']} ({r['decide_p99_ms']}x) | "
              f"{h['server_cpu_ms_per_cycle']} ({r['server_cpu_ms_per_cycle']}x) "
              f"({h['server_cpu_ms_per_cycle_during_load']}, {r['server_cpu_ms_per_cycle_during_load']}x) | "
              f"{h.get('peak_rss_mib')} |")
    for phase, data in results["phases"].items():
        g = data["goal"]
        print(f"\ngoal [{phase}]: cycles/s ≥ {GOAL_THROUGHPUT}x floor during the load "
              f"{'MET' if g['throughput_met'] else 'MISSED'} ({g['throughput_ratio']}x), sustained "
              f"{'MET' if g['sustained_met'] else 'MISSED'} ({g['sustained_ratio']}x); p99 ≤ {GOAL_P99}x floor "
              f"{'MET' if g['p99_met'] else 'MISSED'} (worst {g['worst_p99_ratio']}x)")
    print(f"\ne-mails in the sink at the end: {results['emails_in_sink']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--preload", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="floor/hitl run pairs per phase (median of the per-round ratios)")
    parser.add_argument("--notify", action="store_true",
                        help="keep e-mail notifications on (SMTP sink) during the load: each reviewer "
                             "(rita, ron) gets an e-mail of their own per request; the floor sends one per start")
    parser.add_argument("--author", default=AUTHOR, help="demo person who starts the reviews (default %(default)s)")
    parser.add_argument("--reviewer", default=REVIEWER,
                        help="demo person of the reviewers role who decides them (default %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default bench/results/http_load[-notify].json)")
    ns = parser.parse_args()
    people = {"author": ns.author, "reviewer": ns.reviewer}
    command = "python -m bench.http_load " + shlex.join(sys.argv[1:])
    results: dict[str, Any] = {"meta": {
        "date": dt.date.today().isoformat(), "command": command.strip(), "clients": ns.clients,
        "seconds": ns.seconds, "rounds": ns.rounds, "notify": ns.notify, "cpus": os.cpu_count(),
        "loadavg_before": loadavg()}, "phases": {}}
    with tempfile.TemporaryDirectory(prefix="hitl-load-") as tmp:
        data_dir = Path(tmp) / "hitl"
        data_dir.mkdir()
        # HITL_SMTP_HOST=off: the local host mails nothing (unset, it would fill in its own sink);
        # with --notify both servers mail the relay in a process of its own
        relay = MailRelay(Path(tmp) / "relay") if ns.notify else None
        if relay is not None:
            relay.start()
            atexit.register(relay.stop)  # stopped whatever happens to the run (stop() is idempotent)
        env = ({"HITL_NOTIFY_DEFAULT_RECIPIENTS": "reviewers@example.test", **relay.app_settings()}
               if relay is not None else {"HITL_SMTP_HOST": "off"})
        host = Host(data_dir, env)
        host.start()
        floor = FloorServer(Path(tmp) / "floor", host, smtp_port=relay.smtp_port if relay is not None else None)
        floor.start()

        def mails() -> dict[str, int]:
            return relay.mails() if relay is not None else host.mails()

        try:
            asyncio.run(run_load(floor.base, 4, 3, "warmf", **people))
            asyncio.run(run_load(host.base, 4, 3, "warm", **people))
            phase = compare("empty_store", host, floor, ns, "a", people)
            results["phases"]["empty_store"] = phase
            results["events"] = host.event_stats()
            results["emails_in_sink"] = mails()
        finally:
            phase_floor_rss = round(floor.stop(), 1)
            phase_host_rss = round(host.stop(), 1)
        results["phases"]["empty_store"]["floor"]["peak_rss_mib"] = phase_floor_rss
        results["phases"]["empty_store"]["hitl"]["peak_rss_mib"] = phase_host_rss
        if ns.preload:
            results["preload_seconds"] = round(asyncio.run(preload(data_dir, ns.preload, ns.author)), 1)
            host = Host(data_dir, env)
            host.start()
            floor.host = host
            floor.preload(ns.preload)
            floor.start()
            name = f"with_{ns.preload}_stored"
            try:
                asyncio.run(run_load(floor.base, 4, 3, "warmf2", **people))
                asyncio.run(run_load(host.base, 4, 3, "warm2", **people))
                results["phases"][name] = compare(name, host, floor, ns, "b", people)
                results["emails_in_sink"] = mails()
            finally:
                rss = round(floor.stop(), 1), round(host.stop(), 1)
            results["phases"][name]["floor"]["peak_rss_mib"], results["phases"][name]["hitl"]["peak_rss_mib"] = rss
        if relay is not None:
            relay.stop()
    for data in results["phases"].values():
        data["goal"] = goal(data["ratio_hitl_to_floor"])
    results["meta"]["loadavg_after"] = loadavg()
    out = ns.out or ROOT / "bench" / "results" / f"http_load{'-notify' if ns.notify else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    report(results)
    if not ns.notify and results["emails_in_sink"]["total"]:
        raise SystemExit(f"HITL_SMTP_HOST=off, yet the sink holds {results['emails_in_sink']['total']} e-mail(s)")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
