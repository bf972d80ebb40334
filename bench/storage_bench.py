"""Resume cost per checkpoint backend as the store grows (issue: production storage).

For each backend and store size it fills the store with N pending sessions (realistic
content-review checkpoints, written straight through the storage), then resumes 200 randomly
chosen sessions through the engine (load -> claim -> continuation -> commit), sequentially and
with 16 concurrent callers. It reports p50/p99 per resume, resumes/s, bytes per stored session
and, for Cosmos DB, the request-unit estimate of a start/resume cycle from the document sizes.

RU formula (stated, not measured — the stand-in does not charge RUs): a point read of a
document of s KB costs max(1, ceil(s)) RU; a create or replace costs 5.5 RU per started KB
(Cosmos' rule of thumb for ~1 KB items with the default consistent indexing; our indexing policy
indexes only the few inbox paths, so this is an upper estimate).

Servers (redis-server, the Cosmos stand-in) are started on loopback by the same launchers the
tests use. Run: ``python -m bench.storage_bench [--sizes 1000,10000,100000] [--backends ...]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hitl_core import CheckpointStorage, FileCheckpointStorage, SqliteCheckpointStorage  # noqa: E402
from hitl_core.checkpoint.base import encode_document  # noqa: E402
from hitl_core.checkpoint.models import WorkflowCheckpoint  # noqa: E402
from hitl_core.settings import Settings  # noqa: E402
from workflows import content_review  # noqa: E402

RESUMES = 200
CONCURRENCY = 16
WRITE_RU_PER_KB = 5.5


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def template() -> WorkflowCheckpoint:
    """One real pending content-review checkpoint, produced by the engine."""
    from hitl_core import InMemoryCheckpointStorage

    storage = InMemoryCheckpointStorage()
    workflow = content_review.build(storage, Settings())
    await workflow.run(content_review.ContentReviewInput(draft="A draft of realistic length. " * 8),
                       checkpoint_id="template")
    stored = await storage.load("template")
    assert stored is not None
    return stored.checkpoint


def clone(cp: WorkflowCheckpoint, session_id: str) -> WorkflowCheckpoint:
    copy = cp.model_copy(deep=True)
    copy.session_id = session_id
    for pending in copy.pending_requests:
        pending.call_id = f"{session_id}-call"
        pending.request = dict(pending.request)
        pending.request["v"] = {**pending.request["v"], "request_id": pending.call_id}
    return copy


async def fill(storage: CheckpointStorage, cp: WorkflowCheckpoint, start: int, stop: int) -> None:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            await storage.save(clone(cp, f"s{i:07d}"), expected_version=None)

    await asyncio.gather(*(one(i) for i in range(start, stop)))


async def refill(storage: CheckpointStorage, cp: WorkflowCheckpoint, session_ids: list[str]) -> None:
    """Put resumed (now finished) sessions back as pending ones."""
    sem = asyncio.Semaphore(32)

    async def one(session_id: str) -> None:
        async with sem:
            await storage.delete(session_id)
            await storage.save(clone(cp, session_id), expected_version=None)

    await asyncio.gather(*(one(s) for s in session_ids))


async def resume_all(storage: CheckpointStorage, ids: list[str], concurrency: int) -> tuple[list[float], float]:
    workflow = content_review.build(storage, Settings())
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(session_id: str) -> None:
        async with sem:
            t0 = time.perf_counter()
            await workflow.run_from_checkpoint(session_id, responses={f"{session_id}-call": {"approved": True}})
            latencies.append((time.perf_counter() - t0) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(one(s) for s in ids))
    return latencies, time.perf_counter() - began


@contextlib.asynccontextmanager
async def backend(name: str, tmp: Path, servers: dict[str, Any]) -> AsyncIterator[CheckpointStorage]:
    storage: CheckpointStorage
    if name == "sqlite":
        storage = SqliteCheckpointStorage(tmp / f"bench-{time.time_ns()}.db")
    elif name == "file":
        storage = FileCheckpointStorage(tmp / f"files-{time.time_ns()}")
    elif name == "redis":
        from hitl_core.checkpoint.redis import RedisCheckpointStorage

        storage = RedisCheckpointStorage(servers["redis"], key_prefix=f"bench{time.time_ns()}:")
    else:
        from hitl_core.checkpoint.cosmos import CosmosDBCheckpointStorage

        endpoint, key = servers["cosmos"]
        storage = CosmosDBCheckpointStorage.from_endpoint(endpoint, key=key, verify_tls=False,
                                                          database=f"bench{time.time_ns()}")
    try:
        yield storage
    finally:
        await storage.close()


async def stored_bytes(name: str, storage: CheckpointStorage, tmp: Path, count: int) -> float | None:
    if name == "sqlite":
        assert isinstance(storage, SqliteCheckpointStorage)
        storage._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return storage.path.stat().st_size / count
    if name == "file":
        assert isinstance(storage, FileCheckpointStorage)
        return sum(p.stat().st_size for p in storage.root.rglob("*") if p.is_file()) / count
    if name == "redis":
        client = storage._client  # type: ignore[attr-defined]
        used = await client.info("memory")
        return float(used["used_memory"]) / count
    return None


async def run_backend(name: str, sizes: list[int], servers: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    cp = await template()
    doc_bytes = len(encode_document(cp, None).encode())
    rows = []
    async with backend(name, tmp, servers) as storage:
        filled = 0
        for size in sizes:
            t0 = time.perf_counter()
            await fill(storage, cp, filled, size)
            fill_s = time.perf_counter() - t0
            filled = size
            rng = random.Random(size)
            chosen = rng.sample(range(size), RESUMES * 2)
            seq_ids = [f"s{i:07d}" for i in chosen[:RESUMES]]
            conc_ids = [f"s{i:07d}" for i in chosen[RESUMES:]]
            seq, seq_s = await resume_all(storage, seq_ids, 1)
            _, conc_s = await resume_all(storage, conc_ids, CONCURRENCY)
            per_session = await stored_bytes(name, storage, tmp, size)
            row = {
                "backend": name, "stored": size, "fill_s": round(fill_s, 1),
                "resume_p50_ms": round(statistics.median(seq), 3), "resume_p99_ms": round(pct(seq, 0.99), 3),
                "resumes_per_s_sequential": round(RESUMES / seq_s, 1),
                f"resumes_per_s_{CONCURRENCY}_concurrent": round(RESUMES / conc_s, 1),
                "document_bytes": doc_bytes,
                "stored_bytes_per_session": round(per_session) if per_session else None,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            # the resumed sessions are finished now; refill them so the next size starts from N pending
            await refill(storage, cp, seq_ids + conc_ids)
    return rows


def ru_estimate(doc_bytes_pending: int, doc_bytes_done: int) -> dict[str, float]:
    kb_pending = doc_bytes_pending / 1024
    kb_done = doc_bytes_done / 1024

    def write(kb: float) -> float:
        return WRITE_RU_PER_KB * max(1, math.ceil(kb))

    def read(kb: float) -> float:
        return max(1, math.ceil(kb))

    start = read(0) + write(kb_pending)  # existence check (a miss) + create
    claim_mode = read(kb_pending) + write(kb_pending) + write(kb_done)
    optimistic = read(kb_pending) + write(kb_done)
    return {"start_ru": start, "resume_ru_claim_mode": claim_mode, "resume_ru_optimistic_mode": optimistic,
            "cycle_ru_claim_mode": start + claim_mode, "cycle_ru_optimistic_mode": start + optimistic}


async def finished_doc_bytes() -> int:
    from hitl_core import InMemoryCheckpointStorage

    storage = InMemoryCheckpointStorage()
    workflow = content_review.build(storage, Settings())
    first = await workflow.run(content_review.ContentReviewInput(draft="A draft of realistic length. " * 8),
                               checkpoint_id="t")
    call_id = first.get_request_info_events()[0].request_id
    await workflow.run_from_checkpoint("t", responses={call_id: {"approved": True}})
    stored = await storage.load("t")
    assert stored is not None
    return len(encode_document(stored.checkpoint, None).encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="sqlite,file,redis,cosmos")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--cosmos-sizes", default="1000,10000")
    parser.add_argument("--file-sizes", default="1000,10000")
    ns = parser.parse_args()
    sizes = [int(s) for s in ns.sizes.split(",")]
    wanted = ns.backends.split(",")
    results: dict[str, Any] = {"rows": []}
    with tempfile.TemporaryDirectory(prefix="hitl-storage-bench-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        servers: dict[str, Any] = {}
        if "redis" in wanted:
            from tests.support.redis_server import redis_server

            servers["redis"] = stack.enter_context(redis_server()).url
        if "cosmos" in wanted:
            from tests.support.cosmos_server import cosmos_stand_in

            server = stack.enter_context(cosmos_stand_in())
            servers["cosmos"] = (server.endpoint, server.key)
        plan: dict[str, Callable[[], list[int]]] = {
            "sqlite": lambda: sizes, "redis": lambda: sizes,
            "file": lambda: [int(s) for s in ns.file_sizes.split(",")],
            "cosmos": lambda: [int(s) for s in ns.cosmos_sizes.split(",")],
        }
        for name in wanted:
            results["rows"].extend(asyncio.run(run_backend(name, plan[name](), servers, tmp)))
    pending_bytes = results["rows"][0]["document_bytes"]
    results["cosmos_ru_estimate"] = ru_estimate(pending_bytes, asyncio.run(finished_doc_bytes()))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "storage.json").write_text(json.dumps(results, indent=2))
    print("\n| backend | stored sessions | resume p50 / p99 (ms) | resumes/s (1 / 16 callers) | bytes per session |")
    print("|---|---|---|---|---|")
    for r in results["rows"]:
        print(f"| {r['backend']} | {r['stored']:,} | {r['resume_p50_ms']} / {r['resume_p99_ms']} | "
              f"{r['resumes_per_s_sequential']} / {r[f'resumes_per_s_{CONCURRENCY}_concurrent']} | "
              f"{r['stored_bytes_per_session'] or r['document_bytes']} |")
    print("\nCosmos DB request units (estimate):", json.dumps(results["cosmos_ru_estimate"]))


if __name__ == "__main__":
    main()
