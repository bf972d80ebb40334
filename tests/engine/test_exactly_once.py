"""Exactly one resume wins: concurrent conflicting decisions, in one process and across processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from hitl_core import CheckpointStorage, RequestAlreadyHandledError, SqliteCheckpointStorage

from .flows import CONTINUATIONS, Ticket, build_approval

ROOT = Path(__file__).resolve().parents[2]


async def test_200_concurrent_resumes_run_one_continuation(local_storage: CheckpointStorage) -> None:
    wf = build_approval(local_storage)
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="race")).get_request_info_events()[0].request_id
    CONTINUATIONS.clear()

    async def attempt(i: int) -> str:
        try:
            await build_approval(local_storage).run_from_checkpoint(
                "race", responses={call_id: {"approved": i % 2 == 0, "comment": str(i)}}
            )
            return "won"
        except RequestAlreadyHandledError as exc:
            assert exc.decision["call_id"] == call_id
            return "lost"

    outcomes = await asyncio.gather(*(attempt(i) for i in range(200)))
    assert outcomes.count("won") == 1 and outcomes.count("lost") == 199
    assert CONTINUATIONS == [("race", call_id)]
    stored = await local_storage.load("race")
    assert stored is not None and stored.checkpoint.status == "completed"
    assert len(stored.checkpoint.outputs) == 1
    winner_comment = stored.checkpoint.outputs[0]["comment"]
    decision = stored.checkpoint.find_decision(call_id)
    assert decision is not None and decision.view()["result"]["comment"] == winner_comment


def test_concurrent_resumes_from_several_processes_run_one_continuation(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"

    async def start() -> str:
        storage = SqliteCheckpointStorage(db)
        result = await build_approval(storage).run(Ticket("x", 5.0), checkpoint_id="race")
        await storage.close()
        return result.get_request_info_events()[0].request_id

    call_id = asyncio.run(start())
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.engine.resume_worker", str(db), "race", call_id, "25"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(8)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    assert sum(r["continuations"] for r in reports) == 1
    assert sum(r["outcomes"].get("won", 0) for r in reports) == 1
    assert sum(r["outcomes"].get("already_handled", 0) for r in reports) == 199


async def test_optimistic_mode_commits_one_of_many_concurrent_resumes(local_storage: CheckpointStorage) -> None:
    wf = build_approval(local_storage, resume_mode="optimistic")
    call_id = (await wf.run(Ticket("a", 1.0), checkpoint_id="opt")).get_request_info_events()[0].request_id

    async def attempt(i: int) -> str:
        try:
            await wf.run_from_checkpoint("opt", responses={call_id: {"approved": True, "comment": str(i)}})
            return "won"
        except RequestAlreadyHandledError:
            return "lost"

    outcomes = await asyncio.gather(*(attempt(i) for i in range(50)))
    assert outcomes.count("won") == 1 and outcomes.count("lost") == 49
    stored = await local_storage.load("opt")
    assert stored is not None and len(stored.checkpoint.outputs) == 1 and stored.checkpoint.status == "completed"
