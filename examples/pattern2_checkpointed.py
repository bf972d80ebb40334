"""Pattern 2 — checkpointed pause/resume across two separate processes.

``start`` runs the workflow until it needs a person, checkpoints it in SQLite and exits.
``resume`` is another process: it builds a brand-new workflow object, lists what the checkpoint
waits for (``RequestInfoExecutor.pending_requests_from_checkpoint``), pre-supplies the answer and
continues from storage alone.

Run::

    python -m examples.pattern2_checkpointed start  --db .hitl/pattern2.db --session workflow-123
    python -m examples.pattern2_checkpointed resume --db .hitl/pattern2.db --session workflow-123 --approve
"""

from __future__ import annotations

import argparse
import asyncio
import json

from hitl_core import RequestInfoExecutor, SqliteCheckpointStorage

from .review_workflow import ReviewResponse, build_review_workflow


async def start(db: str, session_id: str, prompt: str) -> dict[str, object]:
    storage = SqliteCheckpointStorage(db)
    workflow = build_review_workflow(storage)
    result = await workflow.run(prompt, checkpoint_id=session_id)
    pending = [e.request_id for e in result.get_request_info_events()]
    await storage.close()
    return {"session_id": session_id, "state": result.get_final_state().value, "pending": pending}


async def resume(db: str, session_id: str, approve: bool, feedback: str) -> dict[str, object]:
    storage = SqliteCheckpointStorage(db)
    workflow = build_review_workflow(storage)  # a new object: nothing carried over in memory
    stored = await storage.load(session_id)
    if stored is None:
        raise SystemExit(f"no session {session_id!r} in {db}")
    answers = {
        event.request_id: ReviewResponse(approved=approve, feedback=feedback)
        for event in RequestInfoExecutor.pending_requests_from_checkpoint(stored)
    }
    result = await workflow.run_from_checkpoint(session_id, responses=answers)
    await storage.close()
    return {
        "session_id": session_id,
        "state": result.get_final_state().value,
        "outputs": result.get_outputs(),
        "pending": [e.request_id for e in result.get_request_info_events()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "resume"])
    parser.add_argument("--db", default=".hitl/pattern2.db")
    parser.add_argument("--session", default="workflow-123")
    parser.add_argument("--prompt", default="Quarterly update")
    parser.add_argument("--approve", action="store_true")
    parser.add_argument("--feedback", default="")
    ns = parser.parse_args()
    if ns.command == "start":
        out = asyncio.run(start(ns.db, ns.session, ns.prompt))
    else:
        out = asyncio.run(resume(ns.db, ns.session, ns.approve, ns.feedback))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
