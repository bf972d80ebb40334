"""The reviewer app's pages with 10,000 pending requests: server time and size of each page.

A benchmark, not a test. The HTTP functions of ``function_app.app`` are called in-process with
``azure.functions.HttpRequest`` objects (as ``tests/functions/conftest.py`` and
:mod:`bench.app_cost` do: no HTTP server, no local host), so the figures are *server time*: what
the function itself spends, without the host, the network or the browser.

Setup (a fresh SQLite store in a temporary folder, dev sign-in, the demo directory
``devhost/demo-directory.json``, events captured in memory, no e-mail, no webhook):

1. ``--sessions`` (default 10,000) ``content-review`` sessions started by erin through the service,
   ``asyncio.gather`` in chunks of ``--chunk``; each asks the ``reviewers`` role (rita and ron), so
   rita's inbox holds all of them. ``--expenses`` (default 200) ``expense-approval`` sessions (ed
   files for erin, her manager amy decides) are spread evenly among them, so the store is mixed and
   amy's inbox is the *filter path* (few of the rows match her).
2. After ``--warmup`` untimed rounds, ``--rounds`` (default 200) rounds, each calling once, in this
   order: the inbox page's first page as rita (``app_inbox``, cookie ``hitl_dev_user=rita``), the
   same as amy, the page of a random pending content-review request as rita (``app_request``), and
   the JSON API's first inbox page as rita (``list_requests``, header ``x-hitl-user: rita``) as
   the floor in the same run. Per call: wall time (``time.perf_counter_ns``) and CPU time of the
   process (``time.process_time_ns``); gc stays on; nothing runs in the background (the outbox
   clean-ups of the seeding are drained first).

Output: p50/p95/p99 in ms (nearest rank), the body's bytes, the ratio page/API at p50 and p95, the
issue's goals judged on wall time (inbox first page p95 < 150 ms, request page p95 < 100 ms, every
page < 100 KB: MET/MISSED), a markdown table, a ``BENCH-RESULT {json}`` line and
``bench/results/app_pages.json`` (gitignored). Exit 1 if a page answered other than 200 or a goal
could not be checked. ``--profile`` prints cProfile's top functions for a few calls of each page.

Run: ``.venv/bin/python -m bench.app_pages [--sessions 10000] [--rounds 200] [--quick] [--profile]``
(``--quick``: 1,000 sessions, 30 rounds, for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import json
import logging
import os
import pstats
import random
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import emit, versions

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIRECTORY = ROOT / "devhost" / "demo-directory.json"
REVIEWER, MANAGER = "rita", "amy"
DRAFT = ("Quarterly release notes: what changed for customers, what to watch for, and who to ask. "
         "The new export runs in the background and mails a link when the file is ready; the old "
         "synchronous export stays available for a month. ") * 3
#: The issue's goals (server time, wall clock, p95) and the page size limit.
INBOX_P95_MS, REQUEST_P95_MS, PAGE_KB = 150.0, 100.0, 100.0
ENDPOINTS = ("inbox_rita", "inbox_amy", "request_rita", "api_inbox_rita")
LABELS = {"inbox_rita": "inbox page, rita (page 1 of N)", "inbox_amy": "inbox page, amy (filter path)",
          "request_rita": "request page, rita", "api_inbox_rita": "JSON API inbox, rita (floor)"}


def configure_env(data_dir: Path) -> None:
    for name in [k for k in os.environ if k.startswith("HITL_")]:
        del os.environ[name]
    os.environ.update({
        "HITL_STORAGE": "sqlite", "HITL_DATA_DIR": str(data_dir), "HITL_AUTH_MODE": "dev",
        "HITL_DIRECTORY": "file", "HITL_DIRECTORY_FILE": str(DEMO_DIRECTORY), "HITL_SMTP_HOST": "off",
        "HITL_WEBHOOK_URL": "off", "HITL_LINK_SIGNING_KEYS": "bench-app-pages-signing-key-0123456789",
    })


def app_functions() -> dict[str, Any]:
    import function_app

    function_app.app.functions_bindings = None
    return {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}


def get(url: str, *, headers: dict[str, str], route: dict[str, str] | None = None) -> Any:
    import azure.functions as func

    return func.HttpRequest(method="GET", url=url, body=b"", route_params=route or {}, params={},
                            headers={"x-forwarded-for": "203.0.113.7", **headers})


def page_as(user: str) -> dict[str, str]:
    return {"cookie": f"hitl_dev_user={user}"}


# -- seeding ------------------------------------------------------------------------------------
async def seed(sessions: int, expenses: int, chunk: int) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Start the sessions; (session_id, call_id) of every content-review request, and the timings."""
    from hitl_core.access import Caller
    from hitl_core.functions import get_runtime

    service = get_runtime().service
    erin, ed = Caller(user="erin"), Caller(user="ed")
    every = max(1, sessions // max(1, expenses)) if expenses else 0
    jobs: list[tuple[str, str]] = []
    made = 0
    for i in range(sessions):
        jobs.append(("content-review", f"cr-{i:06d}"))
        if every and made < expenses and i % every == every // 2:
            jobs.append(("expense-approval", f"ex-{made:04d}"))
            made += 1
    while made < expenses:
        jobs.append(("expense-approval", f"ex-{made:04d}"))
        made += 1

    async def start(kind: str, sid: str) -> tuple[str, str, str]:
        if kind == "content-review":
            result = await service.start(kind, session_id=sid, caller=erin,
                                         input={"draft": f"Draft {sid}: {DRAFT}"})
        else:
            result = await service.start(kind, session_id=sid, caller=ed, input={
                "employee": "erin@example.com", "amount": 120 + len(sid), "currency": "EUR",
                "description": f"Train tickets to the customer workshop ({sid})"})
        return kind, sid, result.session.pending_requests[0].call_id

    c0, w0 = time.process_time(), time.perf_counter()
    done: list[tuple[str, str, str]] = []
    for k in range(0, len(jobs), chunk):
        done.extend(await asyncio.gather(*(start(kind, sid) for kind, sid in jobs[k:k + chunk])))
        if k and k % (10 * chunk) == 0:
            await service.drain()
    calls_s = time.perf_counter() - w0
    await service.drain()  # every delayed outbox clean-up now: nothing runs in the background while measuring
    wall_s = time.perf_counter() - w0
    publisher = service.publisher
    if hasattr(publisher, "events"):
        publisher.events.clear()
    content = [(sid, call_id) for kind, sid, call_id in done if kind == "content-review"]
    return content, {"content_review": len(content), "expense_approval": len(done) - len(content),
                     "chunk": chunk, "seconds": round(wall_s, 2), "seconds_before_drain": round(calls_s, 2),
                     "cpu_seconds": round(time.process_time() - c0, 2),
                     "ms_per_session": round(1000 * wall_s / max(1, len(done)), 3)}


# -- measuring ----------------------------------------------------------------------------------
class Calls:
    """The four calls of a round, each timed (wall and CPU) with its status and body size."""

    def __init__(self, fns: dict[str, Any], requests: list[tuple[str, str]], rng: random.Random) -> None:
        self.fns, self.requests, self.rng = fns, requests, rng
        self.wall: dict[str, list[int]] = {e: [] for e in ENDPOINTS}
        self.cpu: dict[str, list[int]] = {e: [] for e in ENDPOINTS}
        self.size: dict[str, list[int]] = {e: [] for e in ENDPOINTS}
        self.status: dict[str, Counter[int]] = {e: Counter() for e in ENDPOINTS}
        self.api_items: list[int] = []

    def request(self, endpoint: str) -> tuple[Any, Any]:
        if endpoint == "inbox_rita":
            return self.fns["app_inbox"], get("http://localhost/api/app/inbox", headers=page_as(REVIEWER))
        if endpoint == "inbox_amy":
            return self.fns["app_inbox"], get("http://localhost/api/app/inbox", headers=page_as(MANAGER))
        if endpoint == "request_rita":
            sid, call_id = self.rng.choice(self.requests)
            return self.fns["app_request"], get(f"http://localhost/api/app/sessions/{sid}/requests/{call_id}",
                                                headers=page_as(REVIEWER),
                                                route={"session_id": sid, "call_id": call_id})
        return self.fns["list_requests"], get("http://localhost/api/requests", headers={"x-hitl-user": REVIEWER})

    async def one(self, endpoint: str, *, record: bool) -> Any:
        fn, req = self.request(endpoint)
        c0, w0 = time.process_time_ns(), time.perf_counter_ns()
        response = await fn(req)
        wall, cpu = time.perf_counter_ns() - w0, time.process_time_ns() - c0
        if record:
            body = response.get_body()
            self.wall[endpoint].append(wall)
            self.cpu[endpoint].append(cpu)
            self.size[endpoint].append(len(body))
            self.status[endpoint][response.status_code] += 1
            if endpoint == "api_inbox_rita" and response.status_code == 200:
                self.api_items.append(len(json.loads(body)["items"]))
        return response

    async def round(self, *, record: bool = True) -> None:
        for endpoint in ENDPOINTS:
            await self.one(endpoint, record=record)


def pct(ordered: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in ms."""
    rank = max(1, -(-int(q * 100) * len(ordered) // 10000))
    return ordered[min(rank, len(ordered)) - 1] / 1e6


def summary(calls: Calls) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in ENDPOINTS:
        wall, cpu, size = sorted(calls.wall[e]), sorted(calls.cpu[e]), sorted(calls.size[e])
        if not wall:
            out[e] = {"n": 0, "statuses": {}}
            continue
        out[e] = {"n": len(wall), "statuses": {str(k): v for k, v in sorted(calls.status[e].items())},
                  "wall_ms": {f"p{q}": round(pct(wall, q), 3) for q in (50, 95, 99)},
                  "cpu_ms": {f"p{q}": round(pct(cpu, q), 3) for q in (50, 95, 99)},
                  "bytes": {"median": size[len(size) // 2], "max": size[-1]}}
    floor = out["api_inbox_rita"]
    for e in ENDPOINTS[:3]:
        if out[e]["n"] and floor["n"]:
            out[e]["ratio_to_api"] = {q: round(out[e]["wall_ms"][q] / floor["wall_ms"][q], 2) for q in ("p50", "p95")}
    return out


def goals(s: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The issue's goals (None when a check could not run) and whether every check ran."""
    def p95(e: str) -> float | None:
        ok = s[e]["n"] and set(s[e]["statuses"]) == {"200"}
        return s[e]["wall_ms"]["p95"] if ok else None

    sizes = [s[e]["bytes"]["max"] for e in ENDPOINTS[:3] if s[e]["n"]]
    checks = [
        ("inbox first page p95 < 150 ms (rita, all N pending)", p95("inbox_rita"), INBOX_P95_MS, "ms"),
        ("inbox first page p95 < 150 ms (amy, filter path)", p95("inbox_amy"), INBOX_P95_MS, "ms"),
        ("request page p95 < 100 ms", p95("request_rita"), REQUEST_P95_MS, "ms"),
        ("pages < 100 KB (largest page body)", max(sizes) / 1024 if len(sizes) == 3 else None, PAGE_KB, "KB"),
    ]
    found = [{"goal": name, "value": None if v is None else round(v, 2), "limit": limit, "unit": unit,
              "met": None if v is None else v < limit} for name, v, limit, unit in checks]
    return found, all(g["met"] is not None for g in found)


async def profile_pages(calls: Calls, per_page: int) -> None:
    """cProfile of a few calls of each page: the top functions by own time and by cumulative time."""
    for endpoint in ENDPOINTS[:3]:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(per_page):
            await calls.one(endpoint, record=False)
        prof.disable()
        for order in ("tottime", "cumulative"):
            text = io.StringIO()
            pstats.Stats(prof, stream=text).strip_dirs().sort_stats(order).print_stats(18)
            print(f"\n## cProfile {endpoint}, {per_page} calls, by {order}\n{text.getvalue()}", flush=True)


async def run(ns: argparse.Namespace) -> dict[str, Any]:
    from hitl_core.events import InMemoryEventPublisher
    from hitl_core.functions import get_runtime, reset_runtime
    from hitl_core.functions.runtime import close_runtime

    fns = app_functions()
    reset_runtime()
    get_runtime().service.publisher = InMemoryEventPublisher()
    try:
        print(f"seeding {ns.sessions} content-review + {ns.expenses} expense-approval sessions ...", flush=True)
        requests, seeded = await seed(ns.sessions, ns.expenses, ns.chunk)
        print(f"seeded in {seeded['seconds']} s ({seeded['ms_per_session']} ms per session, chunks of {ns.chunk})",
              flush=True)
        calls = Calls(fns, requests, random.Random(ns.seed))
        for _ in range(ns.warmup):
            await calls.round(record=False)
        w0 = time.perf_counter()
        for _ in range(ns.rounds):
            await calls.round()
        measured_s = time.perf_counter() - w0
        if ns.profile:
            await profile_pages(calls, ns.profile_calls)
        return {"seeded": seeded, "measured_seconds": round(measured_s, 2), "api_items_per_page": sorted(
            set(calls.api_items)), "endpoints": summary(calls)}
    finally:
        await close_runtime()


def report(results: dict[str, Any]) -> None:
    meta, s = results["meta"], results["endpoints"]
    print(f"\n{meta['date']} · `{meta['command']}` · {meta['sessions']} pending content-review requests "
          f"(+{meta['expenses']} expense-approval) on SQLite, in-process (server time), {meta['rounds']} rounds "
          f"after {meta['warmup']} warm-up · load average {[round(x, 2) for x in meta['loadavg_before']]} -> "
          f"{[round(x, 2) for x in meta['loadavg_after']]}")
    seeded = results["seeded"]
    print(f"seeding: {seeded['content_review'] + seeded['expense_approval']} sessions in {seeded['seconds']} s "
          f"({seeded['ms_per_session']} ms each, asyncio.gather chunks of {seeded['chunk']})\n")
    print("| call | wall p50 / p95 / p99 ms | CPU p50 / p95 / p99 ms | body bytes (median / max) "
          "| x API p50 / p95 | statuses |")
    print("|---|---|---|---|---|---|")
    for e in ENDPOINTS:
        r = s[e]
        if not r["n"]:
            print(f"| {LABELS[e]} | - | - | - | - | none |")
            continue
        w, c, b = r["wall_ms"], r["cpu_ms"], r["bytes"]
        ratio = r.get("ratio_to_api")
        print(f"| {LABELS[e]} | {w['p50']:.1f} / {w['p95']:.1f} / {w['p99']:.1f} | {c['p50']:.1f} / {c['p95']:.1f} / "
              f"{c['p99']:.1f} | {b['median']:,} / {b['max']:,} | "
              f"{f'{ratio['p50']:.2f} / {ratio['p95']:.2f}' if ratio else '-'} | "
              f"{', '.join(f'{k}: {v}' for k, v in r['statuses'].items())} |")
    print("\ngoals (wall time, server side):")
    for g in results["goals"]:
        verdict = "COULD NOT CHECK" if g["met"] is None else ("MET" if g["met"] else "MISSED")
        print(f"  {verdict:>15}  {g['goal']}: {g['value']} {g['unit']} (limit {g['limit']} {g['unit']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000, help="pending content-review requests (rita's inbox)")
    parser.add_argument("--expenses", type=int, default=200, help="expense-approval sessions mixed in (amy's inbox)")
    parser.add_argument("--rounds", type=int, default=200, help="timed rounds (each calls every page once)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    parser.add_argument("--chunk", type=int, default=100, help="sessions started together with asyncio.gather")
    parser.add_argument("--seed", type=int, default=7, help="random seed for the request pages picked")
    parser.add_argument("--quick", action="store_true", help="1,000 sessions, 30 rounds: a smoke run")
    parser.add_argument("--profile", action="store_true", help="then cProfile a few calls of each page")
    parser.add_argument("--profile-calls", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default bench/results/app_pages.json, app_pages-quick.json with --quick)")
    ns = parser.parse_args()
    if ns.quick:
        ns.sessions, ns.rounds, ns.warmup, ns.expenses = 1000, 30, 3, min(ns.expenses, 50)
    out = ns.out or ROOT / "bench" / "results" / ("app_pages-quick.json" if ns.quick else "app_pages.json")
    sys.path.insert(0, str(ROOT))
    logging.basicConfig(level=logging.WARNING)
    command = ("python -m bench.app_pages " + shlex.join(sys.argv[1:])).strip()
    meta: dict[str, Any] = {"date": dt.date.today().isoformat(), "command": command, "sessions": ns.sessions,
                            "expenses": ns.expenses, "rounds": ns.rounds, "warmup": ns.warmup,
                            "loadavg_before": os.getloadavg(), "cpus": os.cpu_count(),
                            "versions": versions("azure-functions", "pydantic", "jinja2")}
    with tempfile.TemporaryDirectory(prefix="hitl-app-pages-") as tmp:
        configure_env(Path(tmp))
        results = asyncio.run(run(ns))
    meta["loadavg_after"] = os.getloadavg()
    results = {"meta": meta, **results}
    results["goals"], checked = goals(results["endpoints"])
    all_ok = all(set(results["endpoints"][e]["statuses"]) == {"200"} for e in ENDPOINTS)
    full = results["api_items_per_page"] == [min(50, ns.sessions)]
    results["ok"] = all_ok and checked and full
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    report(results)
    if not full:
        print(f"  the JSON API's first page held {results['api_items_per_page']} items, not 50: seeding went wrong")
    print(f"results: {out}")
    emit(results)
    if not results["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
