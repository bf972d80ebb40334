"""Quorum votes on real backends: what one vote costs in storage, and 50 approvers voting at once.

Run from the repo root::

    .venv/bin/python -m bench.vote_bench                      # sqlite, redis, cosmos (stand-in)
    .venv/bin/python -m bench.vote_bench --backends sqlite --rounds 5
    .venv/bin/python -m bench.vote_bench --quick              # smoke run

The workflow is the "poll" of ``tests/storage/test_votes.py`` (imported, not copied): one request
to N named voters under an ``ApprovalPolicy``; its handler counts how often it ran (``RUNS``).
Everything goes through ``HitlService.respond`` in this process (no HTTP); Redis and the Cosmos DB
stand-in run as local servers on 127.0.0.1 (``tests/support``), SQLite in a temporary folder.

1. **One vote at a time** (quorum ``"all"``, ``--voters`` named voters, votes one after another):
   per vote, the storage calls made inside the ``respond`` call (``load`` / conditional ``save``,
   counted by a proxy around the storage), the bytes of the checkpoint JSON each save wrote
   (``checkpoint.model_dump_json()``), and on Cosmos DB the data-plane requests and an RU
   *estimate from document sizes* (the stand-in reports no RU): a point read max(1, ceil(KB)) RU,
   a create / replace / upsert 5.5 RU per started KB. Votes 1 .. N-1 leave the request pending;
   vote N is the deciding vote (claim write + the continuation's final write). The outbox clean-up
   the service schedules 1 s after a publish runs in its own task and is counted apart.
2. **N approvers at once** (quorum ``"all"``, veto off, N distinct users, ``asyncio.gather`` of N
   ``respond`` calls issued together), ``--rounds`` rounds after one warm-up round: latency of each
   call from the moment the burst was issued (what N clients sending at once would see), the time
   until the request resolved (the claim write landed) and until the deciding call returned, the
   conditional writes that lost (``ConcurrencyError``: each is a retry of the claim loop). Every
   round checks: all N votes accepted, exactly one resume (``RUNS``), all N voters in the decision.
   No new round starts once ``--budget`` seconds (per backend) have passed: the runtime stays bounded
   (lost writes grow with the square of the voters on Redis and Cosmos DB).

Prints a table per backend and one ``BENCH-RESULT {json}`` line (date, exact command, load
average). Exit status 1 if a check failed or a backend could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import shlex
import statistics
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import emit, now_ns, versions
from bench.cosmos_counting import WRITE_RU_PER_KB, CountedContainer, doc_size, started_kb
from hitl_core import SqliteCheckpointStorage
from hitl_core.access import Caller
from hitl_core.checkpoint.base import CheckpointStorage
from hitl_core.checkpoint.models import AuditRecord, StoredCheckpoint, WorkflowCheckpoint
from hitl_core.errors import ConcurrencyError, RequestAlreadyHandledError, VoteAlreadyRecordedError
from hitl_core.service import HitlService
from tests.storage.test_votes import RUNS, service_on

VOTE_TASK = "vote-"
P99_GOAL_MS = 200.0
ROUND_TIMEOUT_S = 90.0


def in_vote() -> bool:
    """Whether the running task is one of the bench's vote calls (not a service background task).

    The Cosmos DB storage sends a write's audit documents side by side, each in a task of its own
    running its ``_call``: those belong to the vote that wrote them (outbox clean-ups write no audit)."""
    task = asyncio.current_task()
    if task is None:
        return False
    return task.get_name().startswith(VOTE_TASK) or task.get_coro().__qualname__.endswith("._call")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pct(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


# -- counting ---------------------------------------------------------------------------------
@dataclass
class Tally:
    loads: int = 0
    saves: int = 0
    conflicts: int = 0
    saved_bytes: list[int] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)  # Cosmos DB data-plane requests
    bytes_written: int = 0  # Cosmos DB documents sent
    bytes_read: int = 0  # Cosmos DB documents received
    ru: float = 0.0  # Cosmos DB RU estimate from sizes

    def copy(self) -> Tally:
        return Tally(self.loads, self.saves, self.conflicts, list(self.saved_bytes), Counter(self.requests),
                     self.bytes_written, self.bytes_read, self.ru)

    def minus(self, before: Tally) -> Tally:
        return Tally(self.loads - before.loads, self.saves - before.saves, self.conflicts - before.conflicts,
                     self.saved_bytes[len(before.saved_bytes):], self.requests - before.requests,
                     self.bytes_written - before.bytes_written, self.bytes_read - before.bytes_read,
                     self.ru - before.ru)


class Counts:
    """Tallies for the vote calls and for everything else (outbox clean-ups, start, checks)."""

    def __init__(self) -> None:
        self.call = Tally()
        self.background = Tally()
        self.measure_sizes = True
        self.resolved_ns: dict[str, int] = {}

    def here(self) -> Tally:
        return self.call if in_vote() else self.background

    def reset(self) -> None:
        self.call, self.background = Tally(), Tally()


class CountingStorage:
    """The CheckpointStorage protocol, counted: loads, conditional saves, lost saves, bytes saved."""

    def __init__(self, inner: CheckpointStorage, counts: Counts) -> None:
        self.inner = inner
        self.counts = counts

    async def load(self, session_id: str) -> StoredCheckpoint | None:
        self.counts.here().loads += 1
        return await self.inner.load(session_id)

    async def save(self, checkpoint: WorkflowCheckpoint, *, expected_version: str | None,
                   ttl_seconds: int | None = None, audit: Sequence[AuditRecord] = ()) -> str:
        tally = self.counts.here()
        tally.saves += 1
        size = len(checkpoint.model_dump_json().encode()) if self.counts.measure_sizes else 0
        try:
            version = await self.inner.save(checkpoint, expected_version=expected_version, ttl_seconds=ttl_seconds,
                                            audit=audit)
        except ConcurrencyError:
            tally.conflicts += 1
            raise
        tally.saved_bytes.append(size)
        if not checkpoint.pending_requests and checkpoint.session_id not in self.counts.resolved_ns:
            self.counts.resolved_ns[checkpoint.session_id] = now_ns()
        return version

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CountingContainer(CountedContainer):
    """The container's requests by kind, document bytes and RU estimate, in the calling vote's tally."""

    def __init__(self, inner: Any, counts: Counts) -> None:
        super().__init__(inner)
        self._counts = counts

    def wrote(self, kind: str, doc: dict[str, Any]) -> None:
        tally = self._counts.here()
        tally.requests[kind] += 1
        if self._counts.measure_sizes:
            size = doc_size(doc)
            tally.bytes_written += size
            tally.ru += WRITE_RU_PER_KB * started_kb(size)

    def read(self, doc: dict[str, Any] | None) -> None:
        tally = self._counts.here()
        tally.requests["read"] += 1
        if doc is None:
            tally.ru += 1
        elif self._counts.measure_sizes:
            size = doc_size(doc)
            tally.bytes_read += size
            tally.ru += started_kb(size)

    def batch(self) -> None:
        self._counts.here().requests["batch"] += 1


# -- backends ---------------------------------------------------------------------------------
class Backend:
    """A storage on one backend, wrapped for counting; ``close`` releases what it started."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts = Counts()
        self.storage: CountingStorage | None = None
        self._closers: list[Any] = []
        self._contexts: list[Any] = []
        self.native_ops: Any = None  # CosmosDBCheckpointStorage.ops

    async def open(self) -> CountingStorage:
        if self.name == "sqlite":
            tmp = tempfile.TemporaryDirectory(prefix="hitl-vote-bench-")
            self._contexts.append(tmp)
            inner: Any = SqliteCheckpointStorage(Path(tmp.name) / "hitl.db")
        elif self.name == "redis":
            from hitl_core.checkpoint.redis import RedisCheckpointStorage
            from tests.support.redis_server import redis_server

            ctx = redis_server()
            server = ctx.__enter__()
            self._contexts.append(ctx)
            inner = RedisCheckpointStorage(server.url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}:")
        elif self.name == "cosmos":
            from azure.cosmos.aio import CosmosClient

            from hitl_core.checkpoint.cosmos import CosmosDBCheckpointStorage
            from hitl_core.netaddr import is_loopback_endpoint
            from tests.support.cosmos_server import cosmos_stand_in

            ctx = cosmos_stand_in()
            stand_in = ctx.__enter__()
            self._contexts.append(ctx)
            database, container = "hitl-bench", f"votes-{uuid.uuid4().hex[:10]}"
            # Created as the app does it on the stand-in (layout of cosmos_layout), then reopened
            # through a counting container proxy on a client of our own.
            setup = CosmosDBCheckpointStorage.from_endpoint(stand_in.endpoint, key=stand_in.key, database=database,
                                                            container=container)
            await setup.ensure_container()
            await setup.close()
            client = CosmosClient(stand_in.endpoint, credential=stand_in.key, enable_endpoint_discovery=False)
            self._closers.append(client.close)
            proxy = client.get_database_client(database).get_container_client(container)
            inner = CosmosDBCheckpointStorage(CountingContainer(proxy, self.counts),
                                              stand_in=is_loopback_endpoint(stand_in.endpoint))
            self.native_ops = inner.ops
        else:
            raise SystemExit(f"unknown backend {self.name!r} (sqlite, redis, cosmos)")
        self.storage = CountingStorage(inner, self.counts)
        return self.storage

    async def close(self) -> None:
        for closer in self._closers:
            try:
                await closer()
            except Exception as exc:
                print(f"  closing {self.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        for ctx in reversed(self._contexts):
            if hasattr(ctx, "cleanup"):
                ctx.cleanup()
            else:
                ctx.__exit__(None, None, None)


# -- the workloads ------------------------------------------------------------------------------
async def open_poll(service: HitlService, names: list[str], *, veto: bool, prefix: str) -> tuple[str, str]:
    session_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
    started = await service.start("poll", session_id=session_id, caller=Caller(user="host"),
                                  input={"voters": names, "quorum": "all", "veto": veto})
    await service.drain()  # the start's outbox clean-up now, not during the votes
    return session_id, started.session.pending_requests[0].call_id


async def vote(service: HitlService, session_id: str, call_id: str, voter: str) -> tuple[str, str | None, int]:
    """(answer: ok | duplicate | late | error name, session status after the call, end time ns)."""
    try:
        view = await service.respond(session_id, call_id, {"approved": True}, caller=Caller(user=voter))
    except VoteAlreadyRecordedError:
        return "duplicate", None, now_ns()
    except RequestAlreadyHandledError:
        return "late", None, now_ns()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200], None, now_ns()
    return "ok", view.status, now_ns()


def _vote_row(number: int, d: Tally, ms: float, cosmos: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"vote": number, "reads": d.loads, "writes": d.saves, "conflicts": d.conflicts,
                           "bytes_written": d.saved_bytes, "ms": round(ms, 2)}
    if cosmos:
        row["cosmos"] = {"requests": dict(sorted(d.requests.items())), "bytes_written": d.bytes_written,
                         "bytes_read": d.bytes_read, "ru_estimate": round(d.ru, 1)}
    return row


async def one_at_a_time(backend: Backend, service: HitlService, voters: int) -> dict[str, Any]:
    counts = backend.counts
    cosmos = backend.name == "cosmos"
    names = [f"voter{i}" for i in range(voters)]
    counts.measure_sizes = True
    session_id, call_id = await open_poll(service, names, veto=True, prefix="serial")
    counts.reset()
    rows: list[dict[str, Any]] = []
    for number, name in enumerate(names, start=1):
        before = counts.call.copy()
        t0 = now_ns()
        answer, status, end = await asyncio.create_task(vote(service, session_id, call_id, name),
                                                        name=f"{VOTE_TASK}{name}")
        if answer != "ok":
            raise RuntimeError(f"vote {number} answered {answer!r}")
        expected = "completed" if number == voters else "pending"
        if status != expected:
            raise RuntimeError(f"after vote {number} the session is {status!r}, expected {expected!r}")
        rows.append(_vote_row(number, counts.call.minus(before), (end - t0) / 1e6, cosmos))
    background = counts.background.copy()
    await service.drain()
    cleanup = counts.background.minus(background)
    pending = rows[:-1]
    summary: dict[str, Any] = {
        "voters": voters,
        "reads_per_pending_vote": round(statistics.mean(r["reads"] for r in pending), 2) if pending else None,
        "writes_per_pending_vote": round(statistics.mean(r["writes"] for r in pending), 2) if pending else None,
        "conflicts_during_votes": sum(r["conflicts"] for r in rows),
        "ms_per_pending_vote_median": round(statistics.median(r["ms"] for r in pending), 2) if pending else None,
        "picked": {label: rows[n - 1] for label, n in picks(voters).items()},
        "bytes_written_per_vote": [sum(r["bytes_written"]) for r in rows],
        "background_during_votes": {"reads": background.loads, "writes": background.saves,
                                    "note": "outbox clean-ups the service runs 1 s after a publish"},
        "cleanup_after_deciding_vote": {"reads": cleanup.loads, "writes": cleanup.saves,
                                        "bytes_written": cleanup.saved_bytes},
        "runs": RUNS.get(session_id, 0),
    }
    if cosmos:
        summary["ru_estimate_per_pending_vote"] = (
            round(statistics.mean(r["cosmos"]["ru_estimate"] for r in pending), 1) if pending else None)
        summary["requests_per_pending_vote"] = dict(sorted(
            (k, round(v / len(pending), 2)) for k, v in sum((Counter(r["cosmos"]["requests"]) for r in pending),
                                                            Counter()).items())) if pending else {}
        summary["background_during_votes"]["cosmos_requests"] = dict(background.requests)
        summary["cleanup_after_deciding_vote"].update(cosmos_requests=dict(cleanup.requests),
                                                      ru_estimate=round(cleanup.ru, 1))
    return summary


def picks(voters: int) -> dict[str, int]:
    """Which votes the table shows: the first, the middle one, the last pending one, the deciding one."""
    middle = 25 if voters > 26 else voters // 2
    chosen = {1: "vote 1", middle: f"vote {middle}", voters - 1: f"vote {voters - 1} (last pending)",
              voters: f"vote {voters} (deciding)"}
    return {label: number for number, label in sorted(chosen.items()) if number >= 1}


async def burst(backend: Backend, service: HitlService, voters: int, label: str) -> dict[str, Any]:
    """Every voter at once on one request; timings from the moment the burst was issued."""
    counts = backend.counts
    names = [f"user{i}" for i in range(voters)]
    session_id, call_id = await open_poll(service, names, veto=False, prefix=label)
    counts.measure_sizes = False
    counts.reset()
    ops_before = Counter(backend.native_ops) if backend.native_ops is not None else None
    t0 = now_ns()
    tasks = [asyncio.create_task(vote(service, session_id, call_id, name), name=f"{VOTE_TASK}{name}")
             for name in names]
    results = await asyncio.wait_for(asyncio.gather(*tasks), ROUND_TIMEOUT_S)
    call = counts.call.copy()
    latencies = sorted((end - t0) / 1e6 for _, _, end in results)
    deciding = [end for _, status, end in results if status == "completed"]
    resolved = counts.resolved_ns.get(session_id)
    await service.drain()
    problems: list[str] = []
    answers = Counter(answer for answer, _, _ in results)
    if answers.get("ok", 0) != voters:
        problems.append(f"answers {dict(answers)}")
    runs = RUNS.get(session_id, 0)
    if runs != 1:
        problems.append(f"the poll handler ran {runs} times")
    view = await service.get_session(session_id)
    if view.status != "completed":
        problems.append(f"session is {view.status!r}")
    recorded = sorted(v["voter"] for d in view.decisions for v in d.get("votes", []))
    if recorded != sorted(names):
        problems.append(f"{len(recorded)} votes in the decision, expected {voters}")
    if len(deciding) != 1:
        problems.append(f"{len(deciding)} calls returned a completed session")
    counts.measure_sizes = True
    row: dict[str, Any] = {
        "latencies_ms": [round(x, 2) for x in latencies],
        "p50_ms": round(pct(latencies, 0.5), 2), "p99_ms": round(pct(latencies, 0.99), 2),
        "max_ms": round(latencies[-1], 2),
        "resolved_ms": round((resolved - t0) / 1e6, 2) if resolved else None,
        "deciding_call_ms": round((deciding[0] - t0) / 1e6, 2) if deciding else None,
        "reads": call.loads, "writes": call.saves, "conflicts": call.conflicts,
        "runs": runs, "problems": problems,
    }
    if ops_before is not None:
        row["cosmos_requests"] = dict(sorted((Counter(backend.native_ops) - ops_before).items()))
    return row


def _median(values: Sequence[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


async def run_backend(name: str, voters: int, rounds: int, budget_s: float) -> dict[str, Any]:
    backend = Backend(name)
    result: dict[str, Any] = {"loadavg_before": loadavg()}
    try:
        storage = await backend.open()
        service = service_on(storage)
        try:
            result["one_at_a_time"] = await one_at_a_time(backend, service, voters)
            await burst(backend, service, voters, "warmup")
            per_round: list[dict[str, Any]] = []
            deadline = now_ns() + int(budget_s * 1e9)
            while len(per_round) < rounds and (not per_round or now_ns() < deadline):
                per_round.append(await burst(backend, service, voters, f"burst{len(per_round)}"))
        finally:
            await service.close()  # drains the outbox clean-ups, closes the storage
    finally:
        await backend.close()
    pooled = sorted(x for r in per_round for x in r["latencies_ms"])
    result["at_once"] = {
        "voters": voters, "rounds": len(per_round), "rounds_requested": rounds, "budget_s": budget_s,
        "calls": len(pooled),
        "p50_ms": round(pct(pooled, 0.5), 2), "p99_ms": round(pct(pooled, 0.99), 2), "max_ms": round(pooled[-1], 2),
        "p99_ms_per_round": [r["p99_ms"] for r in per_round],
        "resolved_ms_median": _median([r["resolved_ms"] for r in per_round]),
        "resolved_ms_max": max((r["resolved_ms"] or 0.0) for r in per_round),
        "deciding_call_ms_median": _median([r["deciding_call_ms"] for r in per_round]),
        "conflicts_per_round": [r["conflicts"] for r in per_round],
        "reads_per_round": [r["reads"] for r in per_round],
        "writes_per_round": [r["writes"] for r in per_round],
        "exactly_one_resume": sum(1 for r in per_round if r["runs"] == 1),
        "problems": [f"round {i}: {p}" for i, r in enumerate(per_round) for p in r["problems"]],
        "p99_goal_ms": P99_GOAL_MS, "p99_goal_met": pct(pooled, 0.99) < P99_GOAL_MS,
    }
    if name == "cosmos":
        result["at_once"]["cosmos_requests_per_round"] = [r["cosmos_requests"] for r in per_round]
    result["loadavg_after"] = loadavg()
    return result


# -- report -------------------------------------------------------------------------------------
def report(name: str, r: dict[str, Any]) -> None:
    one, burst_ = r["one_at_a_time"], r["at_once"]
    cosmos = name == "cosmos"
    print(f"\n## {name}  (load average {r['loadavg_before']} -> {r['loadavg_after']})\n")
    print(f"one vote at a time, quorum \"all\" of {one['voters']} named voters (storage calls inside respond):\n")
    head = "| vote | reads | cond. writes | checkpoint bytes written | ms |"
    sep = "|---|---|---|---|---|"
    if cosmos:
        head += " Cosmos requests | doc bytes written / read | RU (est. from sizes) |"
        sep += "---|---|---|"
    print(head)
    print(sep)
    for label, row in one["picked"].items():
        line = (f"| {label} | {row['reads']} | {row['writes']} | {' + '.join(f'{b:,}' for b in row['bytes_written'])}"
                f" | {row['ms']} |")
        if cosmos:
            c = row["cosmos"]
            reqs = ", ".join(f"{k} {v}" for k, v in c["requests"].items())
            line += f" {reqs} | {c['bytes_written']:,} / {c['bytes_read']:,} | {c['ru_estimate']} |"
        print(line)
    extra = f", ~{one['ru_estimate_per_pending_vote']} RU" if cosmos else ""
    print(f"\nper pending vote (mean of votes 1..{one['voters'] - 1}): {one['reads_per_pending_vote']} reads, "
          f"{one['writes_per_pending_vote']} conditional writes{extra}; median {one['ms_per_pending_vote_median']} ms")
    if one["conflicts_during_votes"]:
        print(f"conditional writes that lost during these votes: {one['conflicts_during_votes']} (to the outbox "
              "clean-up running beside them; each costs one more read and write)")
    if cosmos:
        print(f"Cosmos requests per pending vote: {one['requests_per_pending_vote']}")
    bg = one["background_during_votes"]
    cl = one["cleanup_after_deciding_vote"]
    print(f"outbox clean-ups in the background during the {one['voters']} votes: {bg['reads']} reads, "
          f"{bg['writes']} writes; after the deciding vote (once per request): {cl['reads']} read(s), "
          f"{cl['writes']} write(s)" + (f", ~{cl['ru_estimate']} RU" if cosmos else ""))
    cut = (f" (of {burst_['rounds_requested']} asked: the {burst_['budget_s']:g} s budget ran out)"
           if burst_["rounds"] < burst_["rounds_requested"] else "")
    print(f"\n{burst_['voters']} approvers at once x {burst_['rounds']} rounds{cut} (quorum \"all\", veto off; "
          "latency from the burst being issued):\n")
    print("| calls | p50 ms | p99 ms | max ms | resolved ms (median / max) | deciding call ms (median) "
          "| conflicts per round (median / max) | reads / writes per round (median) | exactly one resume |")
    print("|---|---|---|---|---|---|---|---|---|")
    c = burst_["conflicts_per_round"]
    print(f"| {burst_['calls']} | {burst_['p50_ms']} | {burst_['p99_ms']} | {burst_['max_ms']} "
          f"| {burst_['resolved_ms_median']} / {burst_['resolved_ms_max']} | {burst_['deciding_call_ms_median']} "
          f"| {statistics.median(c):g} / {max(c)} | {statistics.median(burst_['reads_per_round']):g} / "
          f"{statistics.median(burst_['writes_per_round']):g} | {burst_['exactly_one_resume']}/{burst_['rounds']} |")
    met = "MET" if burst_["p99_goal_met"] else "MISSED"
    print(f"\np99 goal < {P99_GOAL_MS:g} ms: {met} (pooled p99 {burst_['p99_ms']} ms; per round "
          f"{burst_['p99_ms_per_round']})")
    if cosmos:
        per_round = burst_["cosmos_requests_per_round"]
        kinds = sorted({k for r in per_round for k in r})
        print("Cosmos requests per round (median): "
              + ", ".join(f"{k} {statistics.median(r.get(k, 0) for r in per_round):g}" for k in kinds)
              + " (a lost replace is followed by a read of the current version)")
    for problem in burst_["problems"]:
        print(f"CHECK FAILED: {problem}")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,redis,cosmos", help="comma-separated: sqlite, redis, cosmos")
    parser.add_argument("--voters", type=int, default=50, help="named voters of the request (default 50)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed rounds of the all-at-once burst (default 20; 5 on cosmos)")
    parser.add_argument("--budget", type=float, default=45.0,
                        help="seconds per backend for the timed rounds: no new round starts after it (default 45)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 voters, 2 rounds (1 on cosmos)")
    ns = parser.parse_args(argv)
    if ns.voters < 2:
        parser.error("--voters must be at least 2")
    if ns.rounds is not None and ns.rounds < 1:
        parser.error("--rounds must be at least 1")
    if ns.quick:
        ns.voters = min(ns.voters, 10)
    return ns


def rounds_for(ns: argparse.Namespace, backend: str) -> int:
    if ns.rounds is not None:
        return int(ns.rounds)
    if ns.quick:
        return 1 if backend == "cosmos" else 2
    return 5 if backend == "cosmos" else 20


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    command = ".venv/bin/python -m bench.vote_bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    result: dict[str, Any] = {
        "bench": "vote_bench", "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command.strip(), "cores": os.cpu_count(), "loadavg_before": loadavg(),
        "voters": ns.voters, "quick": ns.quick, "versions": versions("redis", "azure-cosmos"),
        "ru_estimate": "from document sizes (the stand-in reports no RU): point read max(1, ceil(KB)) RU, "
                       "create/replace/upsert 5.5 RU per started KB",
        "backends": {}, "errors": {},
    }
    failed = False
    for name in [b.strip() for b in ns.backends.split(",") if b.strip()]:
        rounds = rounds_for(ns, name)
        print(f"{name}: {ns.voters} voters, {rounds} rounds ...", file=sys.stderr, flush=True)
        try:
            r = asyncio.run(run_backend(name, ns.voters, rounds, ns.budget))
        except Exception as exc:
            failed = True
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"\n## {name}: could not run: {type(exc).__name__}: {exc}", flush=True)
            continue
        result["backends"][name] = r
        report(name, r)
        failed = failed or bool(r["at_once"]["problems"])
    result["loadavg_after"] = loadavg()
    print(f"\n{result['date']} · `{result['command']}` · {result['cores']} cores · load average "
          f"{result['loadavg_before']} -> {result['loadavg_after']}")
    emit(result)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
