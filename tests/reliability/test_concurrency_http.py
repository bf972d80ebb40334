"""500 concurrent conflicting decisions on one request over HTTP: one 200, 499 x 409, one continuation.

The deciders are the two members of the demo directory's ``reviewers`` role: ``rita`` approves,
``ron`` rejects, each 250 times at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.host import running_host

from .support import AUDITOR, REVIEWERS, START, as_user, backend_env

DECISIONS = 500


@pytest.mark.parametrize("backend", ["sqlite", "redis", "cosmos"])
async def test_500_concurrent_conflicting_decisions_one_wins(request: pytest.FixtureRequest, tmp_path: Path,
                                                           backend: str) -> None:
    with running_host(tmp_path / "data", **backend_env(request, backend)) as host:
        limits = httpx.Limits(max_connections=DECISIONS, max_keepalive_connections=DECISIONS)
        async with httpx.AsyncClient(base_url=host.base, timeout=60.0, limits=limits,
                                     headers=as_user(AUDITOR)) as client:
            started = await client.post(START, json={"session_id": "race-500", "input": {"draft": "one winner"}},
                                        headers=as_user("mona"))  # an author; the reviewers decide
            assert started.status_code == 201, started.text
            call_id = started.json()["pending_requests"][0]["call_id"]
            url = "/api/sessions/race-500/responses"
            gate = asyncio.Event()

            async def decide(i: int) -> tuple[int, dict[str, Any], dict[str, Any]]:
                result = {"approved": i % 2 == 0, "feedback": f"reviewer {i}"}  # conflicting answers
                await gate.wait()
                response = await client.post(url, json={"call_id": call_id, "result": result},
                                             headers=as_user(REVIEWERS[i % 2]))
                return response.status_code, result, response.json()

            tasks = [asyncio.create_task(decide(i)) for i in range(DECISIONS)]
            await asyncio.sleep(0.2)  # every task is waiting at the gate
            began = time.monotonic()
            gate.set()
            answers = await asyncio.gather(*tasks)
            elapsed = time.monotonic() - began

            codes = Counter(code for code, _, _ in answers)
            assert codes == {200: 1, 409: DECISIONS - 1}, codes
            ((_, winner, view),) = [(c, r, b) for c, r, b in answers if c == 200]
            for code, _, body in answers:
                if code == 409:
                    assert body["title"] == "Request already handled" and body["call_id"] == call_id, body
                    assert body["decision"]["result"] == winner, body  # every loser is told the recorded decision

            session = (await client.get("/api/sessions/race-500")).json()  # read as the auditor
            audit = (await client.get("/api/sessions/race-500/audit", params={"verify": "true"})).json()
    assert [d["call_id"] for d in session["decisions"]] == [call_id]
    assert session["decisions"][0]["result"] == winner
    if winner["approved"]:
        assert session["status"] == "completed" and session["outputs"] == [{"published": "one winner"}]
        assert view["outputs"] == session["outputs"]
    else:  # the one continuation revised the draft and asked again
        assert session["status"] == "pending" and session["outputs"] == []
        assert [p["data"]["iteration"] for p in session["pending_requests"]] == [2]
    decided = [r for r in audit["records"] if r["action"] == "decided"]
    assert len(decided) == 1 and decided[0]["call_id"] == call_id and decided[0]["detail"]["result"] == winner
    assert decided[0]["actor"] == REVIEWERS[0 if winner["approved"] else 1]  # the reviewer who sent it
    assert audit["verification"]["valid"] is True
    print(f"\n{backend}: {DECISIONS} concurrent decisions in {elapsed:.2f} s: {dict(codes)}")
