"""LangGraph 1.2 with SqliteSaver (langgraph-checkpoint-sqlite) under the benchmark workloads.

Run: ``.venv-bench/bin/python -m bench.engine_langgraph``; prints one ``BENCH-RESULT {json}``
line. LangGraph's idiomatic human-in-the-loop: a node calls ``interrupt(payload)``; the run
stops with ``__interrupt__`` in its result; ``invoke(Command(resume=answer), config)`` re-runs
that node from the checkpoint, where ``interrupt`` now returns the answer. The compiled graph
is stateless (state lives in the checkpointer under the thread id), so one compiled graph
serves every session and every resume reads the checkpoint back from SQLite. Default
durability (``"async"``: a checkpoint per superstep, written in the background and awaited
before ``invoke`` returns).

Bytes: a ``SqliteSaver`` subclass measures what ``put`` and ``put_writes`` hand to SQLite (the
serialized checkpoint blob + metadata JSON of every checkpoint, and the serialized value of
every pending write). Final = the last checkpoint's blob + metadata + its pending writes.
"""

from __future__ import annotations

import importlib
import json
import operator
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import get_checkpoint_metadata
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from bench.common import (
    CHUNK,
    Params,
    RaceTally,
    SideEffects,
    emit,
    median_int,
    note,
    now_ns,
    parse_args,
    race_in_threads,
    summarize_ns,
    versions,
    wchar,
    workdir_for,
)

IMPLS = ("langgraph-sqlite",)
PUBLISHED = SideEffects()


# -- workload 1: draft -> human review -> publish ----------------------------------------------
class ReviewState(TypedDict, total=False):
    sid: str
    topic: str
    draft: str
    approved: bool
    published: str


def draft_node(state: ReviewState) -> ReviewState:
    return {"draft": f"Draft: {state['topic']}"}


def review_node(state: ReviewState) -> ReviewState:
    answer = interrupt({"draft": state["draft"]})
    return {"approved": bool(answer["approved"])}


def publish_node(state: ReviewState) -> ReviewState:
    PUBLISHED.hit(state["sid"])
    return {"published": f"Published: {state['draft']}"}


def after_review(state: ReviewState) -> str:
    return "publish" if state["approved"] else END


def build_review(saver: SqliteSaver) -> Any:
    builder = StateGraph(ReviewState)
    builder.add_node("draft", draft_node)
    builder.add_node("review", review_node)
    builder.add_node("publish", publish_node)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_conditional_edges("review", after_review, ["publish", END])
    builder.add_edge("publish", END)
    return builder.compile(checkpointer=saver)


# -- workload 2: 50 supersteps of +1 KB state, then a pause -----------------------------------
class StepState(TypedDict, total=False):
    chunks: Annotated[list[str], operator.add]
    i: int
    steps: int
    approved: bool


def step_node(state: StepState) -> StepState:
    return {"chunks": [CHUNK], "i": state["i"] + 1}


def after_step(state: StepState) -> str:
    return "step" if state["i"] < state["steps"] else "review"


def chunks_review_node(state: StepState) -> StepState:
    answer = interrupt({"chunks": len(state["chunks"])})
    return {"approved": bool(answer["approved"])}


def build_appender(saver: SqliteSaver) -> Any:
    builder = StateGraph(StepState)
    builder.add_node("step", step_node)
    builder.add_node("review", chunks_review_node)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", after_step, ["step", "review"])
    builder.add_edge("review", END)
    return builder.compile(checkpointer=saver)


# -- storage --------------------------------------------------------------------------------
def open_saver(path: Path, cls: type[SqliteSaver] = SqliteSaver) -> SqliteSaver:
    saver = cls(sqlite3.connect(path, check_same_thread=False))
    saver.setup()
    return saver


class CountingSqliteSaver(SqliteSaver):
    """Measures the payload bytes put() and put_writes() hand to SQLite."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self.put_bytes: dict[str, int] = {}
        self.write_bytes: dict[str, int] = {}

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        _, blob = self.serde.dumps_typed(checkpoint)
        meta = json.dumps(get_checkpoint_metadata(config, metadata), ensure_ascii=False).encode("utf-8", "ignore")
        self.put_bytes[checkpoint["id"]] = self.put_bytes.get(checkpoint["id"], 0) + len(blob) + len(meta)
        return super().put(config, checkpoint, metadata, new_versions)

    def put_writes(self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        size = sum(len(self.serde.dumps_typed(value)[1]) for _, value in writes)
        cid = str(config["configurable"]["checkpoint_id"])
        self.write_bytes[cid] = self.write_bytes.get(cid, 0) + size
        super().put_writes(config, writes, task_id, task_path)


def config_for(sid: str, recursion_limit: int = 25) -> dict[str, Any]:
    return {"configurable": {"thread_id": sid}, "recursion_limit": recursion_limit}


# -- the workloads ----------------------------------------------------------------------------
def review_session(graph: Any, sid: str) -> tuple[int, int]:
    config = config_for(sid)
    t0 = now_ns()
    started = graph.invoke({"sid": sid, "topic": "benchmarks"}, config)
    t1 = now_ns()
    if "__interrupt__" not in started:
        raise RuntimeError(f"session {sid} did not pause: {started!r}")
    t2 = now_ns()
    finished = graph.invoke(Command(resume={"approved": True}), config)
    t3 = now_ns()
    if finished.get("published") != "Published: Draft: benchmarks":
        raise RuntimeError(f"unexpected result {finished!r}")
    return t1 - t0, t3 - t2


def workload_review(workdir: Path, params: Params) -> dict[str, Any]:
    graph = build_review(open_saver(workdir / "review.db"))
    for i in range(params.warmup):
        review_session(graph, f"warm-{i}")
    pauses, resumes = [], []
    for i in range(params.sessions):
        pause, resume = review_session(graph, f"session-{i}")
        pauses.append(pause)
        resumes.append(resume)
    return {"pause": summarize_ns(pauses), "resume": summarize_ns(resumes)}


def workload_steps(workdir: Path, params: Params) -> dict[str, Any]:
    limit = params.steps + 10

    def one(graph: Any, sid: str) -> tuple[int, int]:
        w0 = wchar() or 0
        t0 = now_ns()
        result = graph.invoke({"chunks": [], "i": 0, "steps": params.steps}, config_for(sid, limit))
        t1 = now_ns()
        w1 = wchar() or 0
        if "__interrupt__" not in result or len(result["chunks"]) != params.steps:
            raise RuntimeError(f"did not pause after {params.steps} steps")
        return t1 - t0, w1 - w0

    graph = build_appender(open_saver(workdir / "steps.db"))
    for i in range(params.step_warmup):
        one(graph, f"warm-{i}")
    times, physical = [], []
    for i in range(params.step_runs):
        elapsed, written = one(graph, f"run-{i}")
        times.append(elapsed)
        physical.append(written)
    counting = open_saver(workdir / "steps-counted.db", CountingSqliteSaver)
    assert isinstance(counting, CountingSqliteSaver)
    counted = build_appender(counting)
    one(counted, "counted")
    last = counted.get_state(config_for("counted", limit)).config["configurable"]["checkpoint_id"]
    return {
        "time": summarize_ns(times),
        "bytes_written": sum(counting.put_bytes.values()) + sum(counting.write_bytes.values()),
        "writes": len(counting.put_bytes),
        "final_checkpoint_bytes": counting.put_bytes[last] + counting.write_bytes.get(last, 0),
        "physical_bytes_written": median_int(physical),
        "method": "SqliteSaver subclass: summed the serialized checkpoint blob + metadata JSON of every put() "
                  "and the serialized values of every put_writes(); final = the last checkpoint's blob + "
                  "metadata + its pending writes",
        "physical_method": "wchar delta of /proc/self/io around the run (all write() syscalls of the process: "
                           "SQLite WAL frames incl. page overhead)",
    }


def race_threads(workdir: Path, trials: int) -> RaceTally:
    """Two threads, each with its own SqliteSaver (connection) and compiled graph."""
    path = workdir / "race.db"
    graphs = [build_review(open_saver(path)) for _ in range(2)]
    tally = RaceTally("threads, separate savers (connections)")
    for i in range(trials):
        sid = f"threads-{i}"
        started = graphs[0].invoke({"sid": sid, "topic": "race"}, config_for(sid))
        assert "__interrupt__" in started
        outcomes = race_in_threads(lambda k, sid=sid: graphs[k].invoke(Command(resume={"approved": True}),
                                                                      config_for(sid)))
        tally.add(PUBLISHED.count(sid), outcomes)
    return tally


def main(argv: list[str] | None = None) -> int:
    args, params = parse_args(IMPLS, argv)
    workdir = workdir_for(args)
    result: dict[str, Any] = {
        "impl": args.impl,
        "engine": "LangGraph",
        "storage": "SqliteSaver (WAL, one connection; a checkpoint per superstep)",
        "versions": versions("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite"),
        "notes": ["one compiled graph for all sessions; resume = invoke(Command(resume=...)) from the checkpointer",
                  "sync API: the race uses two threads"],
    }
    if "w1" in params.workloads:
        note(f"{args.impl}: workload 1 ({params.sessions} sessions)")
        result["w1"] = workload_review(workdir, params)
    if "w2" in params.workloads:
        note(f"{args.impl}: workload 2 ({params.steps} steps x {params.step_runs} runs)")
        result["w2"] = workload_steps(workdir, params)
    if "w3" in params.workloads:
        note(f"{args.impl}: workload 3 ({params.race_trials} trials)")
        result["w3"] = [race_threads(workdir, params.race_trials).as_json()]
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(importlib.import_module("bench.engine_langgraph").main())
