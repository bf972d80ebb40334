"""``make bench``: hitl_core vs Agent Framework 1.23 vs LangGraph 1.2, same workloads, one run.

Creates (once) the separate venv ``.venv-bench`` with the competitors and the project
(``pip install -e .``), then runs each implementation's workloads in it as a subprocess, one
after the other so they never share the two cores, collects their JSON, prints medians, p90,
ratios and PASS/MISS against the issue's targets, writes ``bench/results/engine.json`` and
prints a markdown table for the README.

    python -m bench.run_all [--quick] [--only hitl-sqlite,langgraph-sqlite] [--strict]

Not a timed test: it exits non-zero only when an implementation fails to run (or, with
``--strict``, when a target is missed).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULT_PREFIX, RESULTS, ROOT, summarize_ns

VENV = ROOT / ".venv-bench"
VENV_PY = VENV / "bin" / "python"
STAMP = VENV / ".bench-installed"
REQUIREMENTS = ["agent-framework-core==1.23.*", "langgraph==1.2.*", "langgraph-checkpoint-sqlite"]

#: (implementation, module, display name, role): "hitl" rows are judged against the targets,
#: "info" rows are shown for context only, "competitor" rows are the references.
IMPLEMENTATIONS = [
    ("hitl-sqlite", "bench.engine_hitl", "hitl_core / SqliteCheckpointStorage", "hitl"),
    ("hitl-file", "bench.engine_hitl", "hitl_core / FileCheckpointStorage", "hitl"),
    ("hitl-file-nofsync", "bench.engine_hitl", "(info) hitl_core / FileCheckpointStorage(fsync=False)", "info"),
    ("agent-framework-file", "bench.engine_agent_framework", "Agent Framework 1.23 / FileCheckpointStorage",
     "competitor"),
    ("langgraph-sqlite", "bench.engine_langgraph", "LangGraph 1.2 / SqliteSaver", "competitor"),
]
NAMES = {impl: name for impl, _, name, _ in IMPLEMENTATIONS}
ROLES = {impl: role for impl, _, _, role in IMPLEMENTATIONS}

#: ARCHITECTURE.md "Anchors" (medians measured earlier on this kind of machine).
ANCHORS = {
    "agent-framework-file": {"pause_ms": 1.57, "resume_ms": 2.22, "steps_ms": 42.0, "bytes": 1_430_000},
    "langgraph-sqlite": {"pause_ms": 3.7, "resume_ms": 3.0, "steps_ms": 42.0, "bytes": 1_640_000},
}
SPEED_TARGET = 0.5  # hitl pause/resume median <= 0.5 x the faster competitor's
BYTES_TARGET = 1.2  # hitl bytes written to reach the 50-step pause <= 1.2 x the final checkpoint
SUBPROCESS_TIMEOUT = 240
SETTLE_SECONDS = 0.5


# -- the bench venv ---------------------------------------------------------------------------
def _stamp_text() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return json.dumps({"requirements": REQUIREMENTS, "pyproject": digest, "python": sys.version.split()[0]})


def _quiet(cmd: list[str]) -> None:
    """Run an install step; show its output only when it fails."""
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"bench venv setup failed: {' '.join(cmd)}")


def ensure_venv() -> None:
    """Create/refresh .venv-bench when missing or when the requirements or pyproject changed."""
    if VENV_PY.exists() and STAMP.exists() and STAMP.read_text() == _stamp_text():
        return
    started = time.monotonic()
    print(f"Preparing {VENV.relative_to(ROOT)} (competitors + the project, editable); first run takes ~1 min",
          flush=True)
    if not VENV_PY.exists():
        _quiet([sys.executable, "-m", "venv", str(VENV)])
    pip = [str(VENV_PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _quiet([*pip, "--upgrade", "pip"])
    _quiet([*pip, *REQUIREMENTS, "-e", str(ROOT)])
    STAMP.write_text(_stamp_text())
    print(f"  ready in {time.monotonic() - started:.0f} s", flush=True)


# -- running one implementation ---------------------------------------------------------------
def settle() -> None:
    """Flush dirty pages (e.g. the previous implementation's megabytes of checkpoints) before the next one.

    On this VM a burst of writes slows file creation for seconds afterwards; without this, an
    implementation would pay for the writeback of the one that ran before it.
    """
    os.sync()
    time.sleep(SETTLE_SECONDS)


def run_impl(impl: str, module: str, quick: bool, workloads: str, storage_root: Path) -> dict[str, Any]:
    workdir = storage_root / impl
    settle()
    cmd = [str(VENV_PY), "-m", module, "--impl", impl, "--workdir", str(workdir), "--only", workloads]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    print(f"- {NAMES[impl]} ({workloads}) ...", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=SUBPROCESS_TIMEOUT, check=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"{impl} failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    print(f"  done in {result['wall_seconds']} s", flush=True)
    return result


# -- pooling rounds ---------------------------------------------------------------------------
def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the timing samples of every round; bytes come from round 1, races from where they ran."""
    merged = copy.deepcopy(rounds[0])

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for key, value in list(node.items()):
            if isinstance(value, dict) and "samples_ns" in value:
                parts = [_get(r, *path, key) for r in rounds]
                parts = [p for p in parts if p]
                pooled = summarize_ns([s for p in parts for s in p["samples_ns"]])
                pooled["round_medians_ms"] = [p["median_ms"] for p in parts]
                node[key] = pooled
            elif isinstance(value, dict):
                walk(value, (*path, key))

    for workload in ("w1", "w2"):
        donor = next((r for r in rounds if workload in r), None)
        if donor is not None:
            merged[workload] = copy.deepcopy(donor[workload])
    walk(merged, ())
    physical = [_get(r, "w2", "physical_bytes_written") for r in rounds]
    physical = [p for p in physical if p is not None]
    if physical and "w2" in merged:
        merged["w2"]["physical_bytes_written"] = sorted(physical)[len(physical) // 2]
    for r in rounds:
        if "w3" in r:
            merged["w3"] = r["w3"]
    merged["processes"] = len(rounds)
    merged["wall_seconds"] = round(sum(r.get("wall_seconds", 0) for r in rounds), 1)
    return merged


def strip_samples(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_samples(v) for k, v in node.items() if k != "samples_ns"}
    if isinstance(node, list):
        return [strip_samples(v) for v in node]
    return node


# -- analysis -----------------------------------------------------------------------------
def _get(result: dict[str, Any] | None, *path: str) -> Any:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def evaluate(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (hitl storage, target): measured, reference, ratio, PASS/MISS."""
    competitors = _competitors(results)
    rows: list[dict[str, Any]] = []
    for impl, _, _, role in IMPLEMENTATIONS:
        if role != "hitl" or impl not in results:
            continue
        for metric, label in (("pause", "start -> paused"), ("resume", "resume -> finished")):
            mine = _get(results[impl], "w1", metric, "median_ms")
            theirs = [(c, _get(results[c], "w1", metric, "median_ms")) for c in competitors]
            theirs = [(c, v) for c, v in theirs if v is not None]
            if mine is None or not theirs:
                continue
            fastest, ref = min(theirs, key=lambda cv: cv[1])
            pooled = mine / ref
            paired = paired_ratios(results, impl, metric)
            ratio = statistics.median(paired) if paired else pooled
            rows.append({"impl": impl, "target": f"{label} <= {SPEED_TARGET}x faster competitor",
                         "measured": f"{mine:.3f} ms", "reference": f"{ref:.3f} ms ({NAMES[fastest]})",
                         "ratio": ratio, "pooled_ratio": pooled, "round_ratios": paired,
                         "limit": SPEED_TARGET, "ok": ratio <= SPEED_TARGET})
        written = _get(results[impl], "w2", "bytes_written")
        final = _get(results[impl], "w2", "final_checkpoint_bytes")
        if written is not None and final:
            ratio = written / final
            rows.append({"impl": impl, "target": f"bytes written to reach the 50-step pause <= {BYTES_TARGET}x "
                                                 "final checkpoint",
                         "measured": _kb(written), "reference": f"{_kb(final)} (final checkpoint)",
                         "ratio": ratio, "limit": BYTES_TARGET, "ok": ratio <= BYTES_TARGET})
        tallies = _get(results[impl], "w3") or []
        if tallies:
            trials = sum(t["trials"] for t in tallies)
            one = sum(t["exactly_one"] for t in tallies)
            rows.append({"impl": impl, "target": "two concurrent resumes: exactly one continuation per trial",
                         "measured": f"{one}/{trials} trials", "reference": "all trials",
                         "ratio": one / trials if trials else 0.0, "limit": 1.0, "ok": one == trials})
    return rows


def paired_ratios(results: dict[str, dict[str, Any]], impl: str, metric: str) -> list[float]:
    """Per round: this implementation's median / the faster competitor's median in the same round.

    Rounds run the implementations back to back, so a round's ratio compares them under the same
    machine conditions; the verdict uses the median of these ratios.
    """
    mine = _get(results[impl], "w1", metric, "round_medians_ms") or []
    theirs = [_get(results[c], "w1", metric, "round_medians_ms") or [] for c in _competitors(results)]
    ratios = []
    for r, value in enumerate(mine):
        refs = [t[r] for t in theirs if r < len(t)]
        if refs:
            ratios.append(value / min(refs))
    return ratios


def _kb(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1_000_000 else f"{n / 1e3:.1f} KB"


def _ms(summary: dict[str, Any] | None) -> tuple[str, str]:
    if not summary:
        return "-", "-"
    return f"{summary['median_ms']:.3f}", f"{summary['p90_ms']:.3f}"


def _races(result: dict[str, Any]) -> str:
    parts = []
    for tally in _get(result, "w3") or []:
        mode = tally["mode"].split(",")[0]
        parts.append(f"{mode}: 1 ran {tally['exactly_one']}/{tally['trials']}, both ran {tally['both_ran']}")
    return "; ".join(parts) or "-"


def _competitors(results: dict[str, dict[str, Any]]) -> list[str]:
    return [impl for impl, _, _, role in IMPLEMENTATIONS if role == "competitor" and impl in results]


def _ratio_vs_fastest(results: dict[str, dict[str, Any]], impl: str, metric: str) -> str:
    if ROLES[impl] == "competitor":
        return ""
    mine = _get(results[impl], "w1", metric, "median_ms")
    refs = [_get(results[c], "w1", metric, "median_ms") for c in _competitors(results)]
    refs = [r for r in refs if r]
    return f"{mine / min(refs):.2f}x" if mine is not None and refs else "-"


def print_report(results: dict[str, dict[str, Any]], rows: list[dict[str, Any]], params: str) -> None:
    order = [impl for impl, _, _, _ in IMPLEMENTATIONS if impl in results]
    width = max(len(NAMES[i]) for i in order) + 2
    print()
    print(f"Workload 1: draft -> human review -> publish ({params}); per session, ms")
    print(f"{'implementation':<{width}}{'pause med':>10}{'p90':>9}{'vs best':>9}{'resume med':>12}{'p90':>9}"
          f"{'vs best':>9}")
    for impl in order:
        pm, pp = _ms(_get(results[impl], "w1", "pause"))
        rm, rp = _ms(_get(results[impl], "w1", "resume"))
        print(f"{NAMES[impl]:<{width}}{pm:>10}{pp:>9}{_ratio_vs_fastest(results, impl, 'pause'):>9}"
              f"{rm:>12}{rp:>9}{_ratio_vs_fastest(results, impl, 'resume'):>9}")
    af = results.get("agent-framework-file")
    if _get(af, "w1", "build_for_pause"):
        print(f"  Agent Framework builds a Workflow per session and per resume (not included above): "
              f"{_get(af, 'w1', 'build_for_pause', 'median_ms'):.3f} / "
              f"{_get(af, 'w1', 'build_for_resume', 'median_ms'):.3f} ms; with it: pause "
              f"{_get(af, 'w1', 'pause_with_build', 'median_ms'):.3f}, resume "
              f"{_get(af, 'w1', 'resume_with_build', 'median_ms'):.3f} ms")
    print("  anchors (ARCHITECTURE.md): AF 1.57 / 2.22 ms, LangGraph 3.7 / 3.0 ms (pause / resume)")

    print()
    print("Workload 2: 50 supersteps each appending 1 KB to state, then a pause")
    print(f"{'implementation':<{width}}{'time med':>10}{'p90':>9}{'bytes written':>15}{'writes':>8}"
          f"{'final ckpt':>12}{'written/final':>15}{'wchar':>11}")
    for impl in order:
        w2 = _get(results[impl], "w2")
        if not w2:
            continue
        tm, tp = _ms(w2["time"])
        print(f"{NAMES[impl]:<{width}}{tm:>10}{tp:>9}{_kb(w2['bytes_written']):>15}{w2['writes']:>8}"
              f"{_kb(w2['final_checkpoint_bytes']):>12}{w2['bytes_written'] / w2['final_checkpoint_bytes']:>14.2f}x"
              f"{_kb(w2['physical_bytes_written']):>11}")
    print("  anchors: AF 42 ms, 1.43 MB to reach a 53 KB state; LangGraph 42 ms, 1.64 MB")
    print("  bytes written: payload bytes handed to storage (method per implementation below); "
          "wchar: every byte the process passed to write() during the run (/proc/self/io)")
    for impl in order:
        method = _get(results[impl], "w2", "method")
        if method:
            print(f"  - {NAMES[impl]}: {method}")

    print()
    print("Workload 3: two concurrent resumes of one pending request (continuations counted in the final step)")
    for impl in order:
        print(f"{NAMES[impl]:<{width}}{_races(results[impl])}")
    print("  anchors: AF both run; LangGraph both run (400/400 trials)")

    print()
    print("Targets (hitl_core)")
    for row in rows:
        verdict = "PASS" if row["ok"] else "MISS"
        extra = ""
        if "round_ratios" in row:
            extra = (f"; median of per-round ratios ({', '.join(f'{r:.2f}' for r in row['round_ratios'])}), "
                     f"pooled medians give {row['pooled_ratio']:.2f}")
        print(f"  [{verdict}] {NAMES[row['impl']]}: {row['target']}: {row['measured']} vs {row['reference']} "
              f"-> {row['ratio']:.2f} (limit {row['limit']}){extra}")


def markdown(results: dict[str, dict[str, Any]], rows: list[dict[str, Any]], params: str) -> str:
    order = [impl for impl, _, _, _ in IMPLEMENTATIONS if impl in results]
    lines = [
        f"Measured {dt.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {params}. Medians (p90) in ms.",
        "",
        "| implementation | start -> paused | resume -> finished | 50 steps + pause | bytes written to reach it "
        "| final checkpoint | written / final | two concurrent resumes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for impl in order:
        r = results[impl]
        pm, pp = _ms(_get(r, "w1", "pause"))
        rm, rp = _ms(_get(r, "w1", "resume"))
        w2 = _get(r, "w2") or {}
        tm, tp = _ms(w2.get("time"))
        ratio = (f"{w2['bytes_written'] / w2['final_checkpoint_bytes']:.2f}x"
                 if w2.get("final_checkpoint_bytes") else "-")
        lines.append(f"| {NAMES[impl]} | {pm} ({pp}) | {rm} ({rp}) | {tm} ({tp}) | {_kb(w2.get('bytes_written'))} "
                     f"| {_kb(w2.get('final_checkpoint_bytes'))} | {ratio} | {_races(r)} |")
    if rows:
        lines += ["", "| target | implementation | measured | reference | ratio | result |",
                  "|---|---|---|---|---|---|"]
        for row in rows:
            lines.append(f"| {row['target']} | {NAMES[row['impl']]} | {row['measured']} | {row['reference']} "
                         f"| {row['ratio']:.2f} | {'PASS' if row['ok'] else 'MISS'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test of the whole pipeline")
    parser.add_argument("--only", default="", help="comma-separated implementations: " + ", ".join(NAMES))
    parser.add_argument("--rounds", type=int, default=5,
                        help="run workloads 1 and 2 this many times, alternating implementations; samples are "
                             "pooled and targets judged on per-round ratios (default 5; the races run once)")
    parser.add_argument("--storage-root", default="",
                        help="folder for the implementations' fresh storage folders (default bench/results/tmp)")
    parser.add_argument("--skip-install", action="store_true", help="use .venv-bench as it is")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a hitl target is missed")
    args = parser.parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()] or list(NAMES)
    unknown = sorted(set(wanted) - set(NAMES))
    if unknown:
        parser.error(f"unknown implementations {unknown}; choose from {list(NAMES)}")

    started = time.monotonic()
    if not args.skip_install:
        ensure_venv()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rounds = max(1, args.rounds)
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(f"Note: 1-minute load average is {load_before:.2f} before the run: other processes are using the "
              "2 cores, so expect noisier figures (rounds are paired and pooled to soften this).", flush=True)
    storage_root = Path(args.storage_root) if args.storage_root else RESULTS / "tmp"
    # Latency first (workload 1 for every implementation, round after round), then the write-heavy
    # workload 2, then the races: the megabytes workload 2 writes never slow a latency measurement.
    plan = [("w1", r) for r in range(rounds)] + [("w2", r) for r in range(rounds)] + [("w3", 0)]
    print(f"Each implementation runs in its own process, one after the other; workloads 1 and 2 in {rounds} "
          f"rounds each, then the races. Storage under {storage_root}.", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    failures: list[str] = []
    for workload, round_no in plan:
        print(f"{workload}, round {round_no + 1}/{rounds if workload != 'w3' else 1}", flush=True)
        for impl, module, _, _ in IMPLEMENTATIONS:
            if impl not in wanted or impl in failures:
                continue
            try:
                runs.setdefault(impl, []).append(run_impl(impl, module, args.quick, workload, storage_root))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                failures.append(impl)
                print(f"  FAILED: {exc}", flush=True)
    results = {impl: merge_rounds(r) for impl, r in runs.items() if impl not in failures}

    sample = next(iter(runs.values()), [{}])[0]
    n = _get(sample, "w1", "pause", "n")
    params = (f"{n} sessions x {rounds} rounds after warm-up, pooled" if n else "") + (
        " (QUICK smoke run)" if args.quick else "")
    rows = evaluate(results)
    load_after = os.getloadavg()[0]
    print_report(results, rows, params)
    md = markdown(results, rows, params)
    print()
    print("Markdown (for bench/README.md):")
    print()
    print(md)

    out = RESULTS / ("engine-quick.json" if args.quick else "engine.json")  # a smoke run keeps the real results
    out.write_text(json.dumps({
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1min_before": load_before, "loadavg_1min_after": load_after},
        "quick": args.quick,
        "anchors": ANCHORS,
        "targets": {"speed_ratio_max": SPEED_TARGET, "bytes_ratio_max": BYTES_TARGET},
        "rounds": rounds,
        "results": strip_samples(results),
        "evaluation": rows,
        "markdown": md,
    }, indent=2))
    print()
    print(f"Wrote {out.relative_to(ROOT)} in {time.monotonic() - started:.0f} s total")
    if failures:
        return 2
    if args.strict and not all(row["ok"] for row in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
