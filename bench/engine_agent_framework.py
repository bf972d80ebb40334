"""Microsoft Agent Framework 1.23 (agent-framework-core) under the benchmark workloads.

Run: ``.venv-bench/bin/python -m bench.engine_agent_framework``; prints one
``BENCH-RESULT {json}`` line. Storage: ``FileCheckpointStorage`` (one JSON file per checkpoint,
no fsync). AF's idiomatic human-in-the-loop: ``ctx.request_info(request, ResponseType)`` in a
handler and a ``@response_handler`` that receives the answer; a checkpoint is written at the
entry of every run and after every superstep.

A ``Workflow`` instance holds the state of one run, so every session builds its own (as AF's
docs require for independent runs), and every resume builds a new one and restores it from the
pause checkpoint: ``run(checkpoint_id=pause_checkpoint, responses={request_id: answer})``.
Building is timed separately (``build``) and is NOT included in the pause/resume figures.

Bytes: ``FileCheckpointStorage.save`` is wrapped; after each save the size of the checkpoint
file it wrote (``<checkpoint_id>.json``, a new file per checkpoint, never overwritten) is
added up. Final = the pause checkpoint's file.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Never

from agent_framework import (
    Executor,
    FileCheckpointStorage,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    response_handler,
)

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

IMPLS = ("agent-framework-file",)
PUBLISHED = SideEffects()
# The step loop is an intended self-edge; AF's validator warns about it on every build.
logging.getLogger("agent_framework._workflows._validation").setLevel(logging.ERROR)


@dataclass
class ReviewRequest:
    session_id: str
    draft: str


@dataclass
class ReviewResponse:
    approved: bool
    note: str = ""


@dataclass
class ChunksReview:
    chunks: int


ALLOWED_TYPES = [f"{__name__}:{cls.__qualname__}" for cls in (ReviewRequest, ReviewResponse, ChunksReview)]


# -- workload 1: draft -> human review -> publish ----------------------------------------------
class Drafter(Executor):
    def __init__(self) -> None:
        super().__init__(id="drafter")

    @handler
    async def start(self, topic: str, ctx: WorkflowContext[Never, str]) -> None:
        session_id, _, text = topic.partition("|")
        draft = f"Draft: {text}"
        ctx.set_state("draft", draft)
        await ctx.request_info(ReviewRequest(session_id=session_id, draft=draft), ReviewResponse)

    @response_handler
    async def on_review(self, request: ReviewRequest, response: ReviewResponse,
                        ctx: WorkflowContext[Never, str]) -> None:
        if response.approved:
            PUBLISHED.hit(request.session_id)
            await ctx.yield_output(f"Published: {ctx.get_state('draft')}")


def build_review(storage: FileCheckpointStorage) -> Workflow:
    return WorkflowBuilder(name="bench-review", start_executor=Drafter(), checkpoint_storage=storage).build()


# -- workload 2: 50 supersteps of +1 KB state, then a pause -----------------------------------
class Appender(Executor):
    def __init__(self, steps: int) -> None:
        super().__init__(id="appender")
        self._steps = steps

    @handler
    async def step(self, i: int, ctx: WorkflowContext[int, int]) -> None:
        chunks = [*ctx.get_state("chunks", []), CHUNK]
        ctx.set_state("chunks", chunks)
        if i < self._steps:
            await ctx.send_message(i + 1, target_id=self.id)
        else:
            await ctx.request_info(ChunksReview(chunks=len(chunks)), ReviewResponse)

    @response_handler
    async def on_review(self, request: ChunksReview, response: ReviewResponse,
                        ctx: WorkflowContext[Never, int]) -> None:
        await ctx.yield_output(request.chunks)


def build_appender(storage: FileCheckpointStorage, steps: int) -> Workflow:
    appender = Appender(steps)
    return (
        WorkflowBuilder(name="bench-append", start_executor=appender, checkpoint_storage=storage,
                        max_iterations=steps + 10)
        .add_edge(appender, appender)
        .build()
    )


# -- storage --------------------------------------------------------------------------------
def open_storage(workdir: Path, name: str) -> FileCheckpointStorage:
    return FileCheckpointStorage(workdir / name, allowed_checkpoint_types=ALLOWED_TYPES)


class CountingFileStorage(FileCheckpointStorage):
    """Adds up the size of every checkpoint file written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    async def save(self, checkpoint: Any) -> str:
        checkpoint_id: str = await super().save(checkpoint)
        self.sizes.append((self.storage_path / f"{checkpoint_id}.json").stat().st_size)
        return checkpoint_id


# -- the workloads ----------------------------------------------------------------------------
async def start_session(storage: FileCheckpointStorage, sid: str, topic: str) -> tuple[str, str, int, int]:
    """Start a session; returns (pause checkpoint id, request id, build ns, run ns)."""
    b0 = now_ns()
    wf = build_review(storage)
    t0 = now_ns()
    started = await wf.run(f"{sid}|{topic}")
    t1 = now_ns()
    requests = started.get_request_info_events()
    if not requests:
        raise RuntimeError(f"session {sid} did not pause: {started.get_final_state()}")
    checkpoint_id = wf.get_last_checkpoint_id()
    assert checkpoint_id is not None
    return checkpoint_id, requests[0].request_id, t0 - b0, t1 - t0


async def resume_session(storage: FileCheckpointStorage, checkpoint_id: str, request_id: str) -> tuple[Any, int, int]:
    b0 = now_ns()
    wf = build_review(storage)
    t0 = now_ns()
    finished = await wf.run(checkpoint_id=checkpoint_id, responses={request_id: ReviewResponse(approved=True)})
    t1 = now_ns()
    return finished, t0 - b0, t1 - t0


async def review_session(storage: FileCheckpointStorage, sid: str) -> tuple[int, int, int, int]:
    checkpoint_id, request_id, build_a, pause = await start_session(storage, sid, "benchmarks")
    finished, build_b, resume = await resume_session(storage, checkpoint_id, request_id)
    if finished.get_outputs() != ["Published: Draft: benchmarks"]:
        raise RuntimeError(f"unexpected outputs {finished.get_outputs()!r} ({finished.get_final_state()})")
    return pause, resume, build_a, build_b


async def workload_review(workdir: Path, params: Params) -> dict[str, Any]:
    storage = open_storage(workdir, "review")
    for i in range(params.warmup):
        await review_session(storage, f"warm-{i}")
    pauses, resumes, builds_a, builds_b = [], [], [], []
    for i in range(params.sessions):
        pause, resume, build_a, build_b = await review_session(storage, f"session-{i}")
        pauses.append(pause)
        resumes.append(resume)
        builds_a.append(build_a)
        builds_b.append(build_b)
    return {
        "pause": summarize_ns(pauses),
        "resume": summarize_ns(resumes),
        "build_for_pause": summarize_ns(builds_a),
        "build_for_resume": summarize_ns(builds_b),
        "pause_with_build": summarize_ns([p + b for p, b in zip(pauses, builds_a, strict=True)]),
        "resume_with_build": summarize_ns([r + b for r, b in zip(resumes, builds_b, strict=True)]),
    }


async def workload_steps(workdir: Path, params: Params) -> dict[str, Any]:
    async def one(storage: FileCheckpointStorage) -> tuple[int, int]:
        wf = build_appender(storage, params.steps)
        w0 = wchar() or 0
        t0 = now_ns()
        result = await wf.run(1)
        t1 = now_ns()
        w1 = wchar() or 0
        if not result.get_request_info_events():
            raise RuntimeError(f"did not pause: {result.get_final_state()}")
        return t1 - t0, w1 - w0

    storage = open_storage(workdir, "steps")
    for _ in range(params.step_warmup):
        await one(storage)
    times, physical = [], []
    for _ in range(params.step_runs):
        elapsed, written = await one(storage)
        times.append(elapsed)
        physical.append(written)
    counting = CountingFileStorage(workdir / "steps-counted", allowed_checkpoint_types=ALLOWED_TYPES)
    await one(counting)
    return {
        "time": summarize_ns(times),
        "bytes_written": sum(counting.sizes),
        "writes": len(counting.sizes),
        "final_checkpoint_bytes": counting.sizes[-1],
        "physical_bytes_written": median_int(physical),
        "method": "wrapped FileCheckpointStorage.save; summed the size of each checkpoint file written "
                  "(one new <checkpoint_id>.json per save); final = the pause checkpoint's file",
        "physical_method": "wchar delta of /proc/self/io around the run (all write() syscalls of the process)",
    }


async def race_tasks(workdir: Path, trials: int) -> RaceTally:
    storage = open_storage(workdir, "race-tasks")
    tally = RaceTally("asyncio-tasks")
    for i in range(trials):
        sid = f"tasks-{i}"
        checkpoint_id, request_id, _, _ = await start_session(storage, sid, "race")
        results = await asyncio.gather(resume_session(storage, checkpoint_id, request_id),
                                       resume_session(storage, checkpoint_id, request_id),
                                       return_exceptions=True)
        tally.add(PUBLISHED.count(sid), [outcome_name(r) for r in results])
    return tally


def race_threads(workdir: Path, trials: int) -> RaceTally:
    storages = [open_storage(workdir, "race-threads") for _ in range(2)]
    tally = RaceTally("threads, separate storage objects")
    for i in range(trials):
        sid = f"threads-{i}"
        checkpoint_id, request_id, _, _ = asyncio.run(start_session(storages[0], sid, "race"))
        outcomes = race_in_threads(lambda k, c=checkpoint_id, r=request_id: asyncio.run(
            resume_session(storages[k], c, r)))
        tally.add(PUBLISHED.count(sid), outcomes)
    return tally


def main(argv: list[str] | None = None) -> int:
    args, params = parse_args(IMPLS, argv)
    workdir = workdir_for(args)
    result: dict[str, Any] = {
        "impl": args.impl,
        "engine": "Agent Framework",
        "storage": "FileCheckpointStorage (JSON file per checkpoint, no fsync)",
        "versions": versions("agent-framework-core"),
        "notes": ["a new Workflow per session and per resume (AF workflows hold run state); build time "
                  "reported separately, excluded from pause/resume",
                  "checkpoint at run entry and after every superstep"],
    }
    if "w1" in params.workloads:
        note(f"{args.impl}: workload 1 ({params.sessions} sessions)")
        result["w1"] = asyncio.run(workload_review(workdir, params))
    if "w2" in params.workloads:
        note(f"{args.impl}: workload 2 ({params.steps} steps x {params.step_runs} runs)")
        result["w2"] = asyncio.run(workload_steps(workdir, params))
    if "w3" in params.workloads:
        note(f"{args.impl}: workload 3 ({params.race_trials} trials per mode)")
        result["w3"] = [asyncio.run(race_tasks(workdir, params.race_trials)).as_json(),
                        race_threads(workdir, params.race_trials).as_json()]
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(importlib.import_module("bench.engine_agent_framework").main())
