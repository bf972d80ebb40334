"""Resuming in a fresh process, and the shipped examples run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_module(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pattern2_pauses_in_one_process_and_resumes_in_another(tmp_path: Path) -> None:
    db = str(tmp_path / "p2.db")
    started = json.loads(run_module("examples.pattern2_checkpointed", "start", "--db", db, "--session", "s-1"))
    assert started["state"] == "idle_with_pending_requests" and len(started["pending"]) == 1
    rejected = json.loads(run_module("examples.pattern2_checkpointed", "resume", "--db", db, "--session", "s-1",
                                     "--feedback", "more numbers"))
    assert rejected["state"] == "idle_with_pending_requests"
    assert rejected["pending"] != started["pending"]
    approved = json.loads(run_module("examples.pattern2_checkpointed", "resume", "--db", db, "--session", "s-1",
                                     "--approve"))
    assert approved["state"] == "idle"
    assert approved["outputs"] == ["Published: Draft: Quarterly update (revised: more numbers)"]


def test_pattern1_runs_to_publication() -> None:
    out = run_module("examples.pattern1_synchronous")
    assert out.strip() == "Published: Draft: Launch announcement for hitl (revised: add a call to action)"


def test_make_run_demo_runs_all_examples() -> None:
    out = run_module("examples.run_all")
    assert "Pattern 1" in out and "Pattern 2" in out
    assert "'status': 'resumed', 'result': 'Published: Draft: New pricing page (revised: shorter)'" in out


def test_import_loads_no_cloud_sdk() -> None:
    code = (
        "import sys, hitl_core; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('azure', 'redis', 'aiohttp')]; "
        "print(bad)"
    )
    out = run_module_code(code)
    assert out.strip() == "[]"


def run_module_code(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout
