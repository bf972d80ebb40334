"""hitl_core under the benchmark workloads, with SqliteCheckpointStorage or FileCheckpointStorage.

Run: ``.venv-bench/bin/python -m bench.engine_hitl --impl hitl-sqlite`` (or ``hitl-file``);
prints one ``BENCH-RESULT {json}`` line. ``--profile`` prints cProfile's top functions for the
pause and the resume of workload 1 instead.

1. draft -> human review -> publish: ``Drafter`` writes a draft into its executor state and
   sends a ``ReviewRequest`` to the ``RequestInfoExecutor``; the run pauses (one checkpoint
   write). Resume is ``run_from_checkpoint(session, responses={call_id: ReviewResponse})``:
   load, claim (conditional write), deliver, publish (yield output), final write.
2. 50 supersteps, each appending 1 KB to the executor state, then a request (the pause).
   Bytes are counted by wrapping ``storage.save`` and measuring ``encode_document`` of each
   checkpoint passed to it (the document every backend stores).
3. Two concurrent resumes of one pending request; the publish step counts how often it ran.
"""

from __future__ import annotations

import asyncio
import cProfile
import importlib
import io
import pstats
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    CHUNK,
    Params,
    RaceTally,
    SideEffects,
    emit,
    median_int,
    note,
    now_ns,
    outcome_name,
    parse_args,
    race_in_threads,
    summarize_ns,
    versions,
    wchar,
    workdir_for,
)
from hitl_core import (
    CheckpointStorage,
    Executor,
    FileCheckpointStorage,
    RequestInfoExecutor,
    RequestInfoMessage,
    RequestResponse,
    SqliteCheckpointStorage,
    Workflow,
    WorkflowBuilder,
    WorkflowCheckpoint,
    WorkflowContext,
    handler,
)
from hitl_core.checkpoint.base import encode_document

IMPLS = ("hitl-sqlite", "hitl-file", "hitl-file-nofsync")
PUBLISHED = SideEffects()


# -- workload 1: draft -> human review -> publish ----------------------------------------------
@dataclass
class ReviewRequest(RequestInfoMessage):
    draft: str = ""


@dataclass
class ReviewResponse:
    approved: bool
    note: str = ""


class Drafter(Executor):
    def __init__(self, request_info_id: str) -> None:
        super().__init__(id="drafter")
        self._request_info_id = request_info_id

    @handler
    async def start(self, topic: str, ctx: WorkflowContext[ReviewRequest, str]) -> None:
        draft = f"Draft: {topic}"
        await ctx.set_state({"draft": draft})
        await ctx.send_message(ReviewRequest(draft=draft), target_id=self._request_info_id)

    @handler
    async def on_review(self, response: RequestResponse[ReviewRequest, ReviewResponse],
                        ctx: WorkflowContext[ReviewRequest, str]) -> None:
        if response.data.approved:
            state = await ctx.get_state()
            PUBLISHED.hit(ctx.session_id)
            await ctx.yield_output(f"Published: {state['draft']}")


def build_review(storage: CheckpointStorage) -> Workflow:
    request_info = RequestInfoExecutor(id="request_info")
    drafter = Drafter(request_info.id)
    return (
        WorkflowBuilder(name="bench-review")
        .set_start_executor(drafter)
        .add_edge(drafter, request_info)
        .add_edge(request_info, drafter)
        .with_checkpointing(checkpoint_storage=storage)
        .build()
    )


# -- workload 2: 50 supersteps of +1 KB state, then a pause -----------------------------------
@dataclass
class ChunksReview(RequestInfoMessage):
    chunks: int = 0


class Appender(Executor):
    def __init__(self, request_info_id: str, steps: int) -> None:
        super().__init__(id="appender")
        self._request_info_id = request_info_id
        self._steps = steps

    @handler
    async def step(self, i: int, ctx: WorkflowContext[int | ChunksReview, int]) -> None:
        chunks = await ctx.get_state() or []
        chunks.append(CHUNK)
        await ctx.set_state(chunks)
        if i < self._steps:
            await ctx.send_message(i + 1, target_id=self.id)
        else:
            await ctx.send_message(ChunksReview(chunks=len(chunks)), target_id=self._request_info_id)

    @handler
    async def on_review(self, response: RequestResponse[ChunksReview, ReviewResponse],
                        ctx: WorkflowContext[int | ChunksReview, int]) -> None:
        await ctx.yield_output(response.original_request.chunks)


def build_appender(storage: CheckpointStorage, steps: int) -> Workflow:
    request_info = RequestInfoExecutor(id="request_info")
    appender = Appender(request_info.id, steps)
    return (
        WorkflowBuilder(name="bench-append")
        .set_start_executor(appender)
        .add_edge(appender, appender)
        .add_edge(appender, request_info)
        .add_edge(request_info, appender)
        .with_checkpointing(checkpoint_storage=storage)
        .build()
    )


# -- storage --------------------------------------------------------------------------------
def open_storage(impl: str, workdir: Path, name: str) -> CheckpointStorage:
    if impl == "hitl-sqlite":
        return SqliteCheckpointStorage(workdir / f"{name}.db")
    # hitl-file-nofsync: informational, the same durability as Agent Framework's file storage (no fsync)
    return FileCheckpointStorage(storage_path=workdir / name, fsync=impl != "hitl-file-nofsync")


class SaveCounter:
    """Wraps ``storage.save``: the encoded document size of every checkpoint written."""

    def __init__(self, storage: Any) -> None:
        self.sizes: list[int] = []
        self._inner = storage.save

        async def save(checkpoint: WorkflowCheckpoint, **kwargs: Any) -> str:
            self.sizes.append(len(encode_document(checkpoint, None).encode("utf-8")))
            result: str = await self._inner(checkpoint, **kwargs)
            return result

        storage.save = save


# -- the workloads ----------------------------------------------------------------------------
async def review_session(wf: Workflow, sid: str) -> tuple[int, int]:
    t0 = now_ns()
    started = await wf.run("benchmarks", checkpoint_id=sid)
    t1 = now_ns()
    call_id = started.get_request_info_events()[0].request_id
    t2 = now_ns()
    finished = await wf.run_from_checkpoint(sid, responses={call_id: ReviewResponse(approved=True)})
    t3 = now_ns()
    if finished.get_outputs() != ["Published: Draft: benchmarks"]:
        raise RuntimeError(f"unexpected outputs {finished.get_outputs()!r} ({finished.get_failure()})")
    return t1 - t0, t3 - t2


async def workload_review(impl: str, workdir: Path, params: Params) -> dict[str, Any]:
    wf = build_review(open_storage(impl, workdir, "review"))
    for i in range(params.warmup):
        await review_session(wf, f"warm-{i}")
    pauses, resumes = [], []
    for i in range(params.sessions):
        pause, resume = await review_session(wf, f"session-{i}")
        pauses.append(pause)
        resumes.append(resume)
    return {"pause": summarize_ns(pauses), "resume": summarize_ns(resumes)}


async def workload_steps(impl: str, workdir: Path, params: Params) -> dict[str, Any]:
    storage = open_storage(impl, workdir, "steps")
    wf = build_appender(storage, params.steps)

    async def one(sid: str) -> tuple[int, int]:
        w0 = wchar() or 0
        t0 = now_ns()
        result = await wf.run(1, checkpoint_id=sid)
        t1 = now_ns()
        w1 = wchar() or 0
        if not result.get_request_info_events():
            raise RuntimeError(f"did not pause: {result.get_failure()}")
        return t1 - t0, w1 - w0

    for i in range(params.step_warmup):
        await one(f"warm-{i}")
    times, physical = [], []
    for i in range(params.step_runs):
        elapsed, written = await one(f"run-{i}")
        times.append(elapsed)
        physical.append(written)
    # one more run, instrumented (kept out of the timed runs: measuring re-encodes)
    counter = SaveCounter(storage)
    await one("counted")
    return {
        "time": summarize_ns(times),
        "bytes_written": sum(counter.sizes),
        "writes": len(counter.sizes),
        "final_checkpoint_bytes": counter.sizes[-1],
        "physical_bytes_written": median_int(physical),
        "method": "wrapped storage.save; summed len(encode_document(checkpoint)) of every save "
                  "(UTF-8 bytes of the stored JSON document); final = the pause checkpoint's document",
        "physical_method": "wchar delta of /proc/self/io around the run (all write() syscalls of the process: "
                           + ("SQLite WAL frames incl. the inbox row and page overhead"
                              if impl == "hitl-sqlite" else "temp file, replace, audit, lock files") + ")",
    }


async def resume_once(wf: Workflow, sid: str, call_id: str) -> None:
    await wf.run_from_checkpoint(sid, responses={call_id: ReviewResponse(approved=True)})


async def start_session(wf: Workflow, sid: str) -> str:
    started = await wf.run("race", checkpoint_id=sid)
    return started.get_request_info_events()[0].request_id


async def race_tasks(impl: str, workdir: Path, trials: int) -> RaceTally:
    wf = build_review(open_storage(impl, workdir, "race-tasks"))
    tally = RaceTally("asyncio-tasks")
    for i in range(trials):
        sid = f"tasks-{i}"
        call_id = await start_session(wf, sid)
        results = await asyncio.gather(resume_once(wf, sid, call_id), resume_once(wf, sid, call_id),
                                       return_exceptions=True)
        tally.add(PUBLISHED.count(sid), [outcome_name(r) for r in results])
    return tally


def race_threads(impl: str, workdir: Path, trials: int) -> RaceTally:
    """Two threads, each with its own event loop, storage object (connection) and Workflow."""
    workflows = [build_review(open_storage(impl, workdir, "race-threads")) for _ in range(2)]
    tally = RaceTally("threads, separate storage objects")
    for i in range(trials):
        sid = f"threads-{i}"
        call_id = asyncio.run(start_session(workflows[0], sid))
        outcomes = race_in_threads(lambda k, sid=sid, call_id=call_id: asyncio.run(
            resume_once(workflows[k], sid, call_id)))
        tally.add(PUBLISHED.count(sid), outcomes)
    return tally


# -- profile --------------------------------------------------------------------------------
class StorageClock:
    """Wall time spent awaiting ``storage.load``/``storage.save`` (thread hops and I/O included)."""

    def __init__(self, storage: Any) -> None:
        self.ns = {"load": 0, "save": 0}
        self.calls = {"load": 0, "save": 0}
        for name in ("load", "save"):
            setattr(storage, name, self._timed(name, getattr(storage, name)))

    def _timed(self, name: str, inner: Any) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = now_ns()
            try:
                return await inner(*args, **kwargs)
            finally:
                self.ns[name] += now_ns() - t0
                self.calls[name] += 1

        return timed

    def reset(self) -> None:
        self.ns = dict.fromkeys(self.ns, 0)
        self.calls = dict.fromkeys(self.calls, 0)


def profile(impl: str, workdir: Path, params: Params) -> None:
    """Where a pause and a resume spend their time: storage awaits vs the engine, then cProfile.

    cProfile sees the event loop's thread only; FileCheckpointStorage does its I/O in worker
    threads, which shows up as time awaiting ``storage.save``/``load`` (and in ``epoll.poll``).
    """
    storage = open_storage(impl, workdir, "profile")
    clock = StorageClock(storage)
    wf = build_review(storage)
    loop = asyncio.new_event_loop()

    async def warm() -> None:
        for i in range(params.warmup):
            await review_session(wf, f"warm-{i}")

    loop.run_until_complete(warm())
    sids = [f"p-{i}" for i in range(params.sessions)]
    pending: dict[str, str] = {}

    async def pauses() -> None:
        for sid in sids:
            pending[sid] = await start_session(wf, sid)

    async def resumes() -> None:
        for sid in sids:
            await resume_once(wf, sid, pending[sid])

    n = len(sids)
    for title, phase in (("PAUSE (run -> paused)", pauses), ("RESUME (run_from_checkpoint -> finished)", resumes)):
        for profiled in (False, True):
            if profiled:  # fresh sessions for the profiled pass
                sids[:] = [f"{sid}-p" for sid in sids]
                if phase is resumes:
                    loop.run_until_complete(pauses())
            clock.reset()
            prof = cProfile.Profile() if profiled else None
            t0 = now_ns()
            if prof is not None:
                prof.enable()
            loop.run_until_complete(phase())
            if prof is not None:
                prof.disable()
            total = (now_ns() - t0) / n / 1e3
            if prof is None:
                awaited = {k: v / n / 1e3 for k, v in clock.ns.items()}
                print(f"===== {impl} {title}: {n} sessions, without profiler =====")
                print(f"  {total:8.1f} us per operation")
                for k in ("load", "save"):
                    print(f"  {awaited[k]:8.1f} us awaiting storage.{k} ({clock.calls[k] / n:.1f} calls per operation)")
                print(f"  {total - sum(awaited.values()):8.1f} us everything else (engine, serialization, events)")
                print()
                continue
            for sort in ("tottime", "cumulative"):
                out = io.StringIO()
                pstats.Stats(prof, stream=out).strip_dirs().sort_stats(sort).print_stats(22)
                print(f"===== {impl} {title}: cProfile, {n} sessions, sorted by {sort} =====")
                print(out.getvalue())
        if phase is pauses:  # the resumes need pending sessions made without the profiler's skew
            sids[:] = [f"{sid}-r" for sid in sids]
            loop.run_until_complete(pauses())
    loop.close()


# -- entry --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args, params = parse_args(IMPLS, argv)
    workdir = workdir_for(args)
    if args.profile:
        profile(args.impl, workdir, params)
        return 0
    result: dict[str, Any] = {
        "impl": args.impl,
        "engine": "hitl_core",
        "storage": {"hitl-sqlite": "SqliteCheckpointStorage (WAL, synchronous=NORMAL)",
                    "hitl-file": "FileCheckpointStorage (fsync file + folder)",
                    "hitl-file-nofsync": "FileCheckpointStorage(fsync=False)"}[args.impl],
        "versions": versions("hitl_core", "pydantic"),
        "notes": ["one Workflow object shared by all sessions; every resume loads the checkpoint from storage",
                  "default checkpoint policy (on_pause): one write per pause, one claim + one final write "
                  "per resume"],
    }
    if "w1" in params.workloads:
        note(f"{args.impl}: workload 1 ({params.sessions} sessions)")
        result["w1"] = asyncio.run(workload_review(args.impl, workdir, params))
    if "w2" in params.workloads:
        note(f"{args.impl}: workload 2 ({params.steps} steps x {params.step_runs} runs)")
        result["w2"] = asyncio.run(workload_steps(args.impl, workdir, params))
    if "w3" in params.workloads:
        note(f"{args.impl}: workload 3 ({params.race_trials} trials per mode)")
        result["w3"] = [asyncio.run(race_tasks(args.impl, workdir, params.race_trials)).as_json(),
                        race_threads(args.impl, workdir, params.race_trials).as_json()]
    emit(result)
    return 0


if __name__ == "__main__":
    # Run under the importable module name, so checkpointed classes are stored as
    # bench.engine_hitl:... rather than __main__:...
    sys.exit(importlib.import_module("bench.engine_hitl").main())
