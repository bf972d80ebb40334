"""What every engine workload shares: parameters, timing, byte counters, races, JSON output.

Standard library only: this module is imported by the engine scripts inside ``.venv-bench``
(next to Agent Framework and LangGraph) and by ``bench.run_all`` in the project's own venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RESULT_PREFIX = "BENCH-RESULT "

#: Workload parameters (the issue's numbers). ``--quick`` shrinks them for a smoke run.
SESSIONS = 200
WARMUP_SESSIONS = 20
STEPS = 50
CHUNK_BYTES = 1024
STEP_RUNS = 20
STEP_WARMUP = 3
RACE_TRIALS = 50

#: 1 KB of ASCII text appended to the state at every step of workload 2.
CHUNK = ("The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 13)[
    :CHUNK_BYTES
]
assert len(CHUNK.encode("ascii")) == CHUNK_BYTES


@dataclass
class Params:
    sessions: int = SESSIONS
    warmup: int = WARMUP_SESSIONS
    steps: int = STEPS
    step_runs: int = STEP_RUNS
    step_warmup: int = STEP_WARMUP
    race_trials: int = RACE_TRIALS
    workloads: tuple[str, ...] = ("w1", "w2", "w3")


def parse_args(impls: Sequence[str], argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Params]:
    parser = argparse.ArgumentParser(description="Run the engine benchmark workloads for one implementation.")
    parser.add_argument("--impl", choices=list(impls), default=impls[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="fresh storage folder (default: bench/results/tmp/<impl>)")
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke test")
    parser.add_argument("--only", default="w1,w2,w3", help="comma-separated subset of w1,w2,w3")
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile top functions for pause and resume instead of JSON (hitl only)")
    args = parser.parse_args(argv)
    params = Params(workloads=tuple(w.strip() for w in args.only.split(",") if w.strip()))
    if args.quick:
        params = Params(sessions=10, warmup=2, steps=STEPS, step_runs=2, step_warmup=1, race_trials=3,
                        workloads=params.workloads)
    return args, params


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def workdir_for(args: argparse.Namespace) -> Path:
    return fresh_dir(args.workdir or (RESULTS / "tmp" / args.impl))


# -- statistics ---------------------------------------------------------------------------
def summarize_ns(samples_ns: Sequence[int]) -> dict[str, Any]:
    """Median, p90 (nearest rank), min and max in milliseconds, and the raw samples (ns).

    ``bench.run_all`` pools the samples of several rounds and summarizes them again.
    """
    ordered = sorted(samples_ns)
    n = len(ordered)
    p90 = ordered[max(0, -(-9 * n // 10) - 1)]  # nearest-rank: ceil(0.9 n)-th value
    return {
        "n": n,
        "median_ms": statistics.median(ordered) / 1e6,
        "p90_ms": p90 / 1e6,
        "min_ms": ordered[0] / 1e6,
        "max_ms": ordered[-1] / 1e6,
        "samples_ns": list(samples_ns),
    }


def median_int(values: Sequence[int]) -> int:
    return int(statistics.median(values))


now_ns = time.perf_counter_ns


# -- bytes the process wrote ----------------------------------------------------------------
def wchar() -> int | None:
    """Bytes this process (all threads) passed to write()/pwrite() so far (/proc/self/io)."""
    try:
        with open("/proc/self/io", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# -- side effects and races -----------------------------------------------------------------
class SideEffects:
    """Counts how often the final step ran, per session (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def hit(self, session_id: str) -> None:
        with self._lock:
            self._counts[session_id] = self._counts.get(session_id, 0) + 1

    def count(self, session_id: str) -> int:
        with self._lock:
            return self._counts.get(session_id, 0)


def race_in_threads(fn: Callable[[int], Any]) -> list[str]:
    """Run ``fn(0)`` and ``fn(1)`` in two threads released together; outcomes as names."""
    barrier = threading.Barrier(2)
    outcomes = ["", ""]

    def worker(k: int) -> None:
        barrier.wait()
        try:
            fn(k)
            outcomes[k] = "ok"
        except BaseException as exc:
            outcomes[k] = type(exc).__name__

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def outcome_name(result: Any) -> str:
    return type(result).__name__ if isinstance(result, BaseException) else "ok"


@dataclass
class RaceTally:
    """Result of one race mode over N trials."""

    mode: str
    trials: int = 0
    continuations: dict[int, int] = field(default_factory=dict)  # continuations per trial -> trials
    outcomes: dict[str, int] = field(default_factory=dict)  # resume outcome -> count

    def add(self, continuations: int, outcomes: Sequence[str]) -> None:
        self.trials += 1
        self.continuations[continuations] = self.continuations.get(continuations, 0) + 1
        for o in outcomes:
            self.outcomes[o] = self.outcomes.get(o, 0) + 1

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "trials": self.trials,
            "continuations": {str(k): v for k, v in sorted(self.continuations.items())},
            "exactly_one": self.continuations.get(1, 0),
            "both_ran": self.continuations.get(2, 0),
            "outcomes": dict(sorted(self.outcomes.items())),
        }


# -- output ---------------------------------------------------------------------------------
def versions(*dists: str) -> dict[str, str]:
    from importlib import metadata

    found = {"python": sys.version.split()[0]}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def emit(result: dict[str, Any]) -> None:
    """Print the result as one JSON line that ``bench.run_all`` picks out of stdout."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


def note(message: str) -> None:
    sys.stderr.write(f"  [{os.getpid()}] {message}\n")
    sys.stderr.flush()
