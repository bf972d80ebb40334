"""Load the local host over HTTP: N concurrent clients doing start -> decision cycles.

Starts ``python -m devhost`` (the server of ``make run``) on a free loopback port with
a fresh data folder, drives it with aiohttp clients for a fixed time, and reports cycles/s,
p50/p99 of each call and the server's peak memory (VmHWM). Then it stores 10,000 more sessions
directly through the library into the same SQLite file and runs again, to show the latency does
not grow with the store. Everything stays on 127.0.0.1 and stops by itself.

The load acts as people of the demo directory (devhost/demo-directory.json), named by the dev
``X-HITL-User`` header: an author starts each content-review (``--author``, default ``mona``) and
a member of the ``reviewers`` role decides it (``--reviewer``, default ``rita``); anonymous callers
may start but not decide. A call that is refused counts as an error in the results.

Run: ``python -m bench.http_load [--seconds 30] [--clients 16] [--preload 10000] [--author mona] [--reviewer rita]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
#: The people the local host knows (what ``python -m devhost`` uses by default; pinned here).
DIRECTORY = {"HITL_DIRECTORY": "file", "HITL_DIRECTORY_FILE": str(ROOT / "devhost" / "demo-directory.json")}
AUTHOR = "mona"  # starts the reviews (anyone may start; the author may then read the session)
REVIEWER = "rita"  # of the ``reviewers`` role, which decides a content-review without named reviewers


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


class Host:
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
        env.update({"HITL_DATA_DIR": str(self.data_dir), "HITL_PORT": str(self.port), **DIRECTORY, **self.env})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--app", "function_app:app", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(self.data_dir / "host.log", "ab"),
        )
        deadline = time.monotonic() + 60
        import urllib.request

        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/api/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("devhost did not start")

    def drain_events(self, limit_s: float = 300) -> float:
        """Seconds until the local topic has delivered every event (notifications included)."""
        import urllib.request

        began = time.monotonic()
        while time.monotonic() - began < limit_s:
            with urllib.request.urlopen(f"{self.base}/api/_dev/eventgrid", timeout=30) as answer:  # loopback
                stats = json.loads(answer.read())
            if not stats.get("pending"):
                break
            time.sleep(1)
        return round(time.monotonic() - began, 1)

    def mails(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"{self.base}/api/_dev/mailbox", timeout=30) as answer:  # loopback
            data = json.loads(answer.read())
        return len(data["messages"] if isinstance(data, dict) else data)

    def stop(self) -> float:
        assert self.proc is not None
        peak = peak_rss_mib(self.proc.pid)
        self.proc.send_signal(2)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return peak


async def run_load(base: str, clients: int, seconds: float, tag: str, *, author: str = AUTHOR,
                   reviewer: str = REVIEWER) -> dict[str, Any]:
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
    from hitl_core.checkpoint.factory import storage_from_settings
    from hitl_core.directory import directory_from_settings
    from hitl_core.events import NullEventPublisher
    from hitl_core.service import Caller, HitlService
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--preload", type=int, default=10_000)
    parser.add_argument("--notify", action="store_true",
                        help="keep e-mail notifications on (SMTP sink) during the load: each reviewer "
                             "(rita, ron) gets an e-mail of their own per request")
    parser.add_argument("--author", default=AUTHOR, help="demo person who starts the reviews (default %(default)s)")
    parser.add_argument("--reviewer", default=REVIEWER,
                        help="demo person of the reviewers role who decides them (default %(default)s)")
    ns = parser.parse_args()
    people = {"author": ns.author, "reviewer": ns.reviewer}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hitl-load-") as tmp:
        data_dir = Path(tmp)
        env = {"HITL_NOTIFY_DEFAULT_RECIPIENTS": "reviewers@example.test"} if ns.notify else {"HITL_SMTP_HOST": ""}
        host = Host(data_dir, env)
        host.start()
        asyncio.run(run_load(host.base, 4, 3, "warm", **people))
        results["empty_store"] = asyncio.run(run_load(host.base, ns.clients, ns.seconds, "a", **people))
        results["event_delivery_drained_after_s"] = host.drain_events()
        results["emails_in_sink"] = host.mails()
        results["empty_store"]["peak_rss_mib"] = round(host.stop(), 1)
        if ns.preload:
            results["preload_seconds"] = round(asyncio.run(preload(data_dir, ns.preload, ns.author)), 1)
            host = Host(data_dir, env)
            host.start()
            asyncio.run(run_load(host.base, 4, 3, "warm2", **people))
            results[f"with_{ns.preload}_stored"] = asyncio.run(run_load(host.base, ns.clients, ns.seconds, "b",
                                                                        **people))
            results[f"with_{ns.preload}_stored"]["peak_rss_mib"] = round(host.stop(), 1)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "http_load.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print("\n| store | clients | cycles/s | start p50 / p99 (ms) | decide p50 / p99 (ms) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"| {name} | {r['clients']} | {r['cycles_per_s']} | {r['start_p50_ms']} / {r['start_p99_ms']} | "
                  f"{r['decide_p50_ms']} / {r['decide_p99_ms']} | {r['peak_rss_mib']} |")


if __name__ == "__main__":
    main()
