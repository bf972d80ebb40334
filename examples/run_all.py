"""``make run`` (until the local service exists): run every example end to end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from hitl_core import SqliteCheckpointStorage

from . import agent_framework_on_hitl, pattern1_synchronous
from .review_workflow import ReviewResponse
from .seed_end_to_end import ReviewApp, print_notifier


async def seed_demo(db: Path) -> None:
    app = ReviewApp(SqliteCheckpointStorage(db), print_notifier)
    print(await app.start_workflow("order-42", "New pricing page"))
    print(await app.resume_workflow("order-42", ReviewResponse(approved=False, feedback="shorter")))
    print(await app.resume_workflow("order-42", ReviewResponse(approved=True)))


def main() -> None:
    print("== Pattern 1: synchronous escalation ==")
    print(asyncio.run(pattern1_synchronous.run("Launch announcement", pattern1_synchronous.scripted_reviewer)))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "hitl.db"
        print("== Pattern 2: pause in one process, resume in another ==")
        for args in (["start"], ["resume", "--approve"]):
            out = subprocess.run(  # noqa: S603 - our own module, fixed arguments
                [sys.executable, "-m", "examples.pattern2_checkpointed", *args, "--db", str(db)],
                check=True, capture_output=True, text=True,
            ).stdout
            print(json.loads(out))
        print("== The seed's start_workflow / resume_workflow ==")
        asyncio.run(seed_demo(Path(tmp) / "seed.db"))
        print("== An Agent Framework workflow, before and after moving it onto the service ==")
        print(asyncio.run(agent_framework_on_hitl.before(Path(tmp) / "af")))
        print(asyncio.run(agent_framework_on_hitl.after(Path(tmp) / "af.db")))


if __name__ == "__main__":
    main()
