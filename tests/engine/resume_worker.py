"""Child process for the cross-process tests: resume one request N times concurrently.

Prints one JSON line: how many continuations this process ran and how each attempt ended.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

from hitl_core import RequestAlreadyHandledError, SqliteCheckpointStorage

from .flows import CONTINUATIONS, build_approval


async def main(db: str, session_id: str, call_id: str, attempts: int) -> None:
    storage = SqliteCheckpointStorage(db)
    wf = build_approval(storage)
    outcomes: Counter[str] = Counter()

    async def attempt(i: int) -> None:
        try:
            await wf.run_from_checkpoint(session_id, responses={call_id: {"approved": True, "comment": f"p{i}"}})
            outcomes["won"] += 1
        except RequestAlreadyHandledError:
            outcomes["already_handled"] += 1

    await asyncio.gather(*(attempt(i) for i in range(attempts)))
    print(json.dumps({"continuations": len(CONTINUATIONS), "outcomes": outcomes}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
