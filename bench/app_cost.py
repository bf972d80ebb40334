"""What runs in Azure, measured apart from the local host: CPU, storage operations and bytes per call.

The HTTP functions of ``function_app.app`` are called in-process with ``azure.functions.HttpRequest``
objects (as ``tests/functions/conftest.py`` does: no HTTP server, no local host), as the Functions
worker would call them. Events go out through the real publisher (``BatchingEventPublisher`` over
``EventGridPublisherClient``, key credential) to a stand-in topic in another process
(:mod:`bench.topic_sink`), so the publish's client-side CPU is counted and the topic's is not.
Storage: SQLite (a file in a temporary folder) and the Cosmos DB stand-in
(``tests/support/cosmos_server.py``: the npm package ``@vercel/cosmosdb-server``, installed on first
use; it runs in its own process, so its CPU is not counted either).

Per backend, as a reviewer would use it (a decision comes long after its start, so each start's
outbox clean-up write happens on its own, as it would in Azure):

1. ``--calls`` starts of ``content-review`` (author ``mona`` of the demo directory), then 1.2 s and
   :meth:`HitlService.drain` so every delayed outbox clean-up runs;
2. ``--calls`` decisions (reviewer ``rita``), then the same wait and drain.

Each phase runs twice: once bare, for CPU (``time.process_time``: user + system of the whole
process, background tasks and threads included; ``resource.getrusage`` agrees), and once with
counting proxies around the storage (calls, documents and bytes at the storage API) and under it
(SQLite statements; Cosmos DB data-plane requests and their document sizes), whose own CPU is
therefore not in the CPU figures.

Estimates (assumptions, stated): Cosmos DB RU from document sizes — a point read costs
max(1, ceil(KB)) RU (a read of a missing item 1 RU), a create / replace / upsert 5.5 RU per started
KB (Cosmos' rule of thumb for small items with consistent indexing; our indexing policy indexes a
few inbox paths only, so this is an upper estimate); in Azure the session and its audit records are
one transactional batch, costed as the sum of its operations. GB-seconds at the Flex Consumption
2,048 MB instance size: billed memory x busy time; the lower bound counts only the CPU time (an
instance kept busy by concurrent calls, whose I/O waits overlap), the upper bound the wall time of
each call run alone (here with loopback storage: Azure's network adds to it).

Run: ``python -m bench.app_cost [--calls 1000] [--backends sqlite,cosmos]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.cosmos_counting import WRITE_RU_PER_KB, CountedContainer, doc_size, started_kb

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIRECTORY = ROOT / "devhost" / "demo-directory.json"
AUTHOR, REVIEWER = "mona", "rita"
TOPIC_KEY = "bench-topic-key"
INSTANCE_GB = 2.0  # Flex Consumption instance memory size 2,048 MB
CLEAR_WAIT_S = 1.2  # HitlService.outbox_clear_delay is 1 s


def cpu_now() -> float:
    return time.process_time()


def rusage_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- counting proxies -------------------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()  # storage API calls
        self.backend: Counter[str] = Counter()  # SQL statements / Cosmos requests
        self.bytes_written = 0
        self.bytes_read = 0
        self.ru = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "backend": dict(self.backend), "bytes_written": self.bytes_written,
                "bytes_read": self.bytes_read, "ru": round(self.ru, 1)}


class CountingStorage:
    """The CheckpointStorage protocol, counted: calls and the documents' JSON bytes in and out."""

    def __init__(self, inner: Any, tally: Tally) -> None:
        self._inner = inner
        self._tally = tally

    async def load(self, session_id: str) -> Any:
        self._tally.calls["load"] += 1
        stored = await self._inner.load(session_id)
        if stored is not None:
            self._tally.bytes_read += len(stored.checkpoint.model_dump_json().encode())
        return stored

    async def save(self, checkpoint: Any, *, expected_version: str | None, ttl_seconds: int | None = None,
                   audit: Any = ()) -> str:
        self._tally.calls["save"] += 1
        self._tally.calls["audit_records"] += len(audit)
        self._tally.bytes_written += len(checkpoint.model_dump_json().encode())
        self._tally.bytes_written += sum(len(r.model_dump_json().encode()) for r in audit)
        return str(await self._inner.save(checkpoint, expected_version=expected_version, ttl_seconds=ttl_seconds,
                                          audit=audit))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if callable(attr) and not name.startswith("_"):
            self._tally.calls[name] += 1
        return attr


class CountingClearingStorage(CountingStorage):
    """For a storage that empties outboxes in place (``OutboxClearing``): the proxy must offer the
    method itself, since the service checks for it with ``isinstance`` (static lookup, so
    ``__getattr__`` would hide it and the service would read and rewrite instead)."""

    async def clear_outboxes(self, versions: Any) -> set[str]:
        self._tally.calls["clear_outboxes"] += 1
        cleared: set[str] = await self._inner.clear_outboxes(versions)
        return cleared


class CountingSqlite:
    """sqlite3.Connection stand-in counting statements (BEGIN/COMMIT apart) and the text bound/fetched."""

    def __init__(self, inner: Any, tally: Tally) -> None:
        self._inner = inner
        self._tally = tally

    def execute(self, sql: str, params: Any = ()) -> Any:
        verb = sql.split(None, 1)[0].upper()
        self._tally.backend[verb] += 1
        self._tally.bytes_written += sum(len(p) for p in params if isinstance(p, str)) if verb in (
            "INSERT", "UPDATE") else 0
        cursor = self._inner.execute(sql, params)
        if verb == "SELECT":
            rows = cursor.fetchall()
            self._tally.bytes_read += sum(len(v) for row in rows for v in row if isinstance(v, str))
            return _Rows(rows, cursor)
        return cursor

    def executemany(self, sql: str, seq: Any) -> Any:
        verb = sql.split(None, 1)[0].upper()
        rows = list(seq)
        self._tally.backend[f"{verb} (rows)"] += len(rows)
        self._tally.bytes_written += sum(len(p) for row in rows for p in row if isinstance(p, str))
        return self._inner.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Rows:
    def __init__(self, rows: list[Any], cursor: Any) -> None:
        self._rows = rows
        self.rowcount = cursor.rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class CountingContainer(CountedContainer):
    """The container's requests by kind, document sizes and their RU estimate, in the phase's tally."""

    def __init__(self, inner: Any, tally: Tally) -> None:
        super().__init__(inner)
        self._tally = tally

    def wrote(self, kind: str, doc: dict[str, Any]) -> None:
        size = doc_size(doc)
        self._tally.backend[kind] += 1
        self._tally.bytes_written += size
        self._tally.ru += WRITE_RU_PER_KB * started_kb(size)

    def read(self, doc: dict[str, Any] | None) -> None:
        self._tally.backend["read"] += 1
        if doc is None:
            self._tally.backend["read (missing)"] += 1
            self._tally.ru += 1
            return
        size = doc_size(doc)
        self._tally.bytes_read += size
        self._tally.ru += started_kb(size)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if callable(attr):
            self._tally.backend[name] += 1
        return attr


# -- the app, called as the worker would -----------------------------------------------------
def app_functions() -> dict[str, Any]:
    import function_app

    function_app.app.functions_bindings = None
    return {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}


def http(method: str, url: str, *, body: Any, user: str, route: dict[str, str]) -> Any:
    import azure.functions as func

    return func.HttpRequest(method=method, url=url, body=json.dumps(body).encode(), route_params=route, params={},
                            headers={"content-type": "application/json", "x-hitl-user": user,
                                     "x-forwarded-for": "203.0.113.7"})


async def run_phase(kind: str, fns: dict[str, Any], ids: list[str], calls: dict[str, str]) -> dict[str, Any]:
    """Call start_session (kind "start") or post_response ("decide") once per id, one after another."""
    from hitl_core.functions import get_runtime

    cpu_each: list[float] = []
    wall_each: list[float] = []
    statuses: Counter[int] = Counter()
    c0, r0, w0 = cpu_now(), rusage_cpu(), time.perf_counter()
    for sid in ids:
        if kind == "start":
            req = http("POST", "http://localhost/api/workflows/content-review/sessions", user=AUTHOR,
                       route={"workflow": "content-review"},
                       body={"session_id": sid, "input": {"draft": "A draft of realistic length. " * 8}})
            fn = fns["start_session"]
        else:
            req = http("POST", f"http://localhost/api/sessions/{sid}/responses", user=REVIEWER,
                       route={"session_id": sid}, body={"call_id": calls[sid], "result": {"approved": True}})
            fn = fns["post_response"]
        a, b = cpu_now(), time.perf_counter()
        response = await fn(req)
        cpu_each.append(cpu_now() - a)
        wall_each.append(time.perf_counter() - b)
        statuses[response.status_code] += 1
        if kind == "start":
            calls[sid] = json.loads(response.get_body())["pending_requests"][0]["call_id"]
    calls_cpu = cpu_now() - c0
    await asyncio.sleep(CLEAR_WAIT_S)
    await get_runtime().service.drain()
    total_cpu, total_rusage = cpu_now() - c0, rusage_cpu() - r0
    n = len(ids)
    return {
        "calls": n, "statuses": dict(statuses),
        "cpu_ms_per_call_median": round(1000 * statistics.median(cpu_each), 3),
        "cpu_ms_per_call_mean": round(1000 * calls_cpu / n, 3),
        "cpu_ms_per_call_with_background": round(1000 * total_cpu / n, 3),
        "rusage_cpu_ms_per_call_with_background": round(1000 * total_rusage / n, 3),
        "wall_ms_per_call_median": round(1000 * statistics.median(wall_each), 3),
        "wall_ms_per_call_mean": round(1000 * sum(wall_each) / n, 3),
        "elapsed_s": round(time.perf_counter() - w0, 2),
        # the phase's wall time without the fixed wait for the delayed clean-ups, per call
        "wall_ms_per_call_with_background": round(1000 * (time.perf_counter() - w0 - CLEAR_WAIT_S) / n, 3),
    }


def instrument(tally: Tally) -> None:
    """Put the counting proxies around (and under) the runtime's storage."""
    from hitl_core.functions import get_runtime

    service = get_runtime().service
    inner = service.storage
    if hasattr(inner, "_db"):
        inner._db = CountingSqlite(inner._db, tally)
    if hasattr(inner, "_container") and inner._container is not None:
        inner._container = CountingContainer(inner._container, tally)
    from hitl_core.checkpoint.base import OutboxClearing

    proxy = CountingClearingStorage if isinstance(inner, OutboxClearing) else CountingStorage
    service.storage = proxy(inner, tally)


def per_call(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    def diff(a: dict[str, int], b: dict[str, int]) -> dict[str, float]:
        return {k: round((b.get(k, 0) - a.get(k, 0)) / n, 2) for k in sorted(set(a) | set(b))
                if b.get(k, 0) - a.get(k, 0)}

    return {"storage_calls": diff(before["calls"], after["calls"]),
            "backend_requests": diff(before["backend"], after["backend"]),
            "bytes_written": round((after["bytes_written"] - before["bytes_written"]) / n),
            "bytes_read": round((after["bytes_read"] - before["bytes_read"]) / n),
            "ru_estimate": round((after["ru"] - before["ru"]) / n, 1)}


async def measure(backend: str, calls_per_phase: int, warmup: int) -> dict[str, Any]:
    from hitl_core.functions import get_runtime, reset_runtime
    from hitl_core.functions.runtime import close_runtime

    fns = app_functions()
    reset_runtime()
    rt = get_runtime()
    if backend == "cosmos":
        await rt.service.storage.ensure_container()  # type: ignore[attr-defined]
    ids: dict[str, str] = {}
    result: dict[str, Any] = {"backend": backend}
    try:
        warm = [f"warm-{i}" for i in range(warmup)]
        await run_phase("start", fns, warm, ids)
        await run_phase("decide", fns, warm, ids)
        cpu_ids = [f"cpu-{i}" for i in range(calls_per_phase)]
        result["start"] = await run_phase("start", fns, cpu_ids, ids)
        result["decide"] = await run_phase("decide", fns, cpu_ids, ids)
        tally = Tally()
        instrument(tally)
        count_ids = [f"count-{i}" for i in range(calls_per_phase)]
        s0 = tally.snapshot()
        await run_phase("start", fns, count_ids, ids)
        s1 = tally.snapshot()
        await run_phase("decide", fns, count_ids, ids)
        s2 = tally.snapshot()
        result["start"]["storage"] = per_call(s0, s1, calls_per_phase)
        result["decide"]["storage"] = per_call(s1, s2, calls_per_phase)
    finally:
        await close_runtime()
    return result


def per_thousand(r: dict[str, Any]) -> dict[str, Any]:
    """Per 1,000 decisions, each with its start (a decision needs one), background work included."""
    s, d = r["start"], r["decide"]
    cpu_ms = s["cpu_ms_per_call_with_background"] + d["cpu_ms_per_call_with_background"]
    wall_ms = s["wall_ms_per_call_with_background"] + d["wall_ms_per_call_with_background"]
    st, ds = s["storage"], d["storage"]
    skip = ("BEGIN", "COMMIT", "ROLLBACK", "read (missing)")  # transaction brackets; misses are counted in "read"
    backend_ops = sum(v for k, v in st["backend_requests"].items() if k not in skip) + \
        sum(v for k, v in ds["backend_requests"].items() if k not in skip)
    return {
        "cpu_s": round(cpu_ms, 2),  # ms per cycle x 1000 cycles / 1000
        "cpu_s_decision_alone": round(d["cpu_ms_per_call_with_background"], 2),
        "storage_api_calls": round(1000 * (sum(v for k, v in st["storage_calls"].items() if k != "audit_records")
                                           + sum(v for k, v in ds["storage_calls"].items()
                                                 if k != "audit_records"))),
        "backend_requests": round(1000 * backend_ops),
        "mb_written": round((st["bytes_written"] + ds["bytes_written"]) * 1000 / 1e6, 2),
        "mb_read": round((st["bytes_read"] + ds["bytes_read"]) * 1000 / 1e6, 2),
        "ru_estimate": round(1000 * (st["ru_estimate"] + ds["ru_estimate"])) if r["backend"] == "cosmos" else None,
        "gb_s_lower_cpu_bound": round(INSTANCE_GB * cpu_ms, 2),
        "gb_s_upper_sequential_wall": round(INSTANCE_GB * max(wall_ms, cpu_ms), 2),
        "executions_http": 2000,
        "executions_event_grid_in_azure": round(1000 * r["events_delivered_in_azure_per_cycle"]),
    }


@contextlib.contextmanager
def topic_sink() -> Iterator[str]:
    from tests.support.ports import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.topic_sink", "--port", str(port), "--key", TOPIC_KEY],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request

    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def sink_stats(base: str) -> dict[str, int]:
    import urllib.request

    with urllib.request.urlopen(f"{base}/stats", timeout=5) as answer:
        return dict(json.loads(answer.read()))


def configure_env(backend: str, data_dir: Path, topic: str, cosmos: Any) -> None:
    for name in [k for k in os.environ if k.startswith("HITL_")]:
        del os.environ[name]
    os.environ.update({
        "HITL_STORAGE": backend, "HITL_DATA_DIR": str(data_dir), "HITL_AUTH_MODE": "dev",
        "HITL_DIRECTORY": "file", "HITL_DIRECTORY_FILE": str(DEMO_DIRECTORY), "HITL_SMTP_HOST": "off",
        "HITL_EVENTGRID_TOPIC_ENDPOINT": f"{topic}/runtime/eventgrid/topics/bench/api/events",
        "HITL_EVENTGRID_TOPIC_KEY": TOPIC_KEY, "HITL_PUBLIC_BASE_URL": "https://hitl.example.test",
    })
    if cosmos is not None:
        os.environ.update({"HITL_COSMOS_ENDPOINT": cosmos.endpoint, "HITL_COSMOS_KEY": cosmos.key,
                           "HITL_COSMOS_VERIFY_TLS": "false", "HITL_COSMOS_DATABASE": f"bench{time.time_ns()}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="starts, then as many decisions, per backend")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--backends", default="sqlite,cosmos")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "app_cost.json")
    parser.add_argument("--report", type=Path, default=None, help="print the tables of an earlier results JSON")
    ns = parser.parse_args()
    if ns.report is not None:
        earlier = json.loads(ns.report.read_text())
        for r in earlier["backends"].values():
            r["per_1000_decisions"] = per_thousand(r)
        report(earlier)
        return
    sys.path.insert(0, str(ROOT))
    import logging

    logging.basicConfig(level=logging.WARNING)
    command = "python -m bench.app_cost " + shlex.join(sys.argv[1:])
    results: dict[str, Any] = {"meta": {"date": dt.date.today().isoformat(), "command": command.strip(),
                                        "calls_per_phase": ns.calls, "loadavg_before": os.getloadavg()},
                               "backends": {}}
    with topic_sink() as topic, tempfile.TemporaryDirectory(prefix="hitl-app-cost-") as tmp:
        for backend in ns.backends.split(","):
            ctx: Any = contextlib.nullcontext(None)
            if backend == "cosmos":
                from tests.support.cosmos_server import cosmos_stand_in

                ctx = cosmos_stand_in()
            with ctx as cosmos:
                configure_env(backend, Path(tmp) / backend, topic, cosmos)
                before = sink_stats(topic)
                r = asyncio.run(measure(backend, ns.calls, ns.warmup))
                after = sink_stats(topic)
                r["events_published_per_cycle"] = round((after["events"] - before["events"])
                                                        / (2 * ns.calls + ns.warmup), 2)
                # what Azure's subscriptions (their filters: infra/modules/eventgrid-subscription.bicep) deliver
                delivered = {fn: n - before["deliveries"].get(fn, 0) for fn, n in after["deliveries"].items()}
                r["deliveries_in_azure_per_cycle"] = {fn: round(n / (2 * ns.calls + ns.warmup), 2)
                                                      for fn, n in delivered.items()}
                r["events_delivered_in_azure_per_cycle"] = round(sum(r["deliveries_in_azure_per_cycle"].values()), 2)
                r["per_1000_decisions"] = per_thousand(r)
                results["backends"][backend] = r
                print(f"{backend}: start {r['start']['cpu_ms_per_call_with_background']} ms CPU, decide "
                      f"{r['decide']['cpu_ms_per_call_with_background']} ms CPU", flush=True)
    results["meta"]["loadavg_after"] = os.getloadavg()
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(results, indent=2))
    report(results)
    print(f"results: {ns.out}")


def report(results: dict[str, Any]) -> None:
    meta = results["meta"]
    b = results["backends"]
    ref = b.get("sqlite")
    print(f"\n{meta['date']} · `{meta['command']}` · {meta['calls_per_phase']} starts then as many decisions per "
          f"backend, in-process · load average {[round(x, 2) for x in meta['loadavg_before']]} -> "
          f"{[round(x, 2) for x in meta['loadavg_after']]}")
    print("\nper call (CPU: user+system of the process, including the background outbox clean-up and publish):\n")
    print("| backend | call | CPU ms (median call) | CPU ms (with background) | wall ms alone (median) "
          "| storage calls | backend requests | bytes written / read | RU (est.) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in b.items():
        for kind in ("start", "decide"):
            p = r[kind]
            st = p["storage"]
            ratio = ""
            if ref is not None and name != "sqlite":
                mine, theirs = p["cpu_ms_per_call_with_background"], ref[kind]["cpu_ms_per_call_with_background"]
                ratio = f" ({mine / theirs:.2f}x SQLite)"
            calls = ", ".join(f"{k} {v:g}" for k, v in st["storage_calls"].items())
            backend = ", ".join(f"{k} {v:g}" for k, v in st["backend_requests"].items())
            print(f"| {name} | {kind} | {p['cpu_ms_per_call_median']} | {p['cpu_ms_per_call_with_background']}"
                  f"{ratio} | {p['wall_ms_per_call_median']} | {calls} | {backend} | {st['bytes_written']} / "
                  f"{st['bytes_read']} | {st['ru_estimate'] if name == 'cosmos' else '-'} |")
    print("\nper 1,000 decisions (each with its start):\n")
    print("| backend | CPU-s | storage API calls | backend requests | MB written / read | RU (est.) "
          "| GB-s at 2,048 MB (CPU-bound .. sequential wall) | executions (HTTP + Event Grid triggers in Azure) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in b.items():
        k = r["per_1000_decisions"]
        ratio = f" ({k['cpu_s'] / ref['per_1000_decisions']['cpu_s']:.2f}x SQLite)" if ref and name != "sqlite" else ""
        print(f"| {name} | {k['cpu_s']}{ratio} | {k['storage_api_calls']} | {k['backend_requests']} | "
              f"{k['mb_written']} / {k['mb_read']} | {k['ru_estimate'] if k['ru_estimate'] is not None else '-'} | "
              f"{k['gb_s_lower_cpu_bound']} .. {k['gb_s_upper_sequential_wall']} | "
              f"{k['executions_http']} + {k['executions_event_grid_in_azure']} |")


if __name__ == "__main__":
    main()
