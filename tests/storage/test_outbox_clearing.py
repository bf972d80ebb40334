"""Emptying published outboxes: in place, many sessions in one write, never under a continuation.

After a write's events are published, the session's outbox is emptied so the sweep does not send
them again. SQLite does it without reading the sessions (``clear_outboxes``: ``json_set`` on the
stored document) and for every clean-up that falls due in the same tick in one transaction; a
session written since it was published, or held by a continuation, is left to the read-and-rewrite
path, which keeps whatever was not published. Storages without the capability (here the in-memory
one) go through that path for every session.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import workflows
from hitl_core.checkpoint import InMemoryCheckpointStorage, SqliteCheckpointStorage
from hitl_core.checkpoint.base import CheckpointStorage, OutboxClearing
from hitl_core.events import InMemoryEventPublisher
from hitl_core.service import HitlService
from hitl_core.settings import Settings
from hitl_core.testing import make_checkpoint, make_request

EVENT = {"id": "e-1", "type": "hitl.request.created"}


async def test_sqlite_clears_only_sessions_still_at_their_version_and_not_running(tmp_path: Path) -> None:
    storage = SqliteCheckpointStorage(tmp_path / "s.db")
    versions: dict[str, str] = {}
    for sid, status in (("idle", "pending"), ("moved", "pending"), ("held", "running"), ("done", "completed")):
        cp = make_checkpoint(sid, requests=[make_request("c", approvers=["role:r"])])
        cp.status = status
        cp.outbox = [dict(EVENT, id=f"{sid}-1")]
        versions[sid] = await storage.save(cp, expected_version=None)
    moved = (await storage.load("moved"))
    assert moved is not None
    moved.checkpoint.outbox.append(dict(EVENT, id="moved-2"))  # written again after the publish
    await storage.save(moved.checkpoint, expected_version=moved.version)
    statements: list[str] = []
    storage._db.set_trace_callback(statements.append)

    cleared = await storage.clear_outboxes({**versions, "gone": "1", "odd": "not-a-version"})

    assert cleared == {"idle", "done"}
    assert [s for s in statements if s.startswith(("BEGIN", "COMMIT", "SELECT"))] == ["BEGIN IMMEDIATE", "COMMIT"]
    for sid in ("idle", "done"):
        stored = await storage.load(sid)
        assert stored is not None and stored.checkpoint.outbox == [] and stored.version == "2"
        assert stored.checkpoint.pending_requests[0].call_id == "c"  # the rest of the document is intact
    for sid, outbox in (("moved", ["moved-1", "moved-2"]), ("held", ["held-1"])):
        stored = await storage.load(sid)
        assert stored is not None and [e["id"] for e in stored.checkpoint.outbox] == outbox
    assert await storage.count_pending_requests(assignee="role:r") == 4  # no index row was touched
    await storage.close()


def service_on(storage: CheckpointStorage, publisher: InMemoryEventPublisher) -> HitlService:
    return HitlService(settings=Settings(auth_mode="dev"), storage=storage, publisher=publisher,
                       workflows=workflows.ALL)


async def start_reviews(service: HitlService, count: int) -> list[str]:
    ids = [f"r-{i}" for i in range(count)]
    for sid in ids:
        await service.start("content-review", session_id=sid, input={"draft": f"draft {sid}"})
    return ids


async def outboxes(storage: CheckpointStorage, ids: list[str]) -> dict[str, list[Any]]:
    found = {sid: await storage.load(sid) for sid in ids}
    return {sid: stored.checkpoint.outbox for sid, stored in found.items() if stored is not None}


async def test_the_clean_ups_of_one_tick_are_one_write_on_sqlite(tmp_path: Path) -> None:
    storage, publisher = SqliteCheckpointStorage(tmp_path / "s.db"), InMemoryEventPublisher()
    service = service_on(storage, publisher)
    ids = await start_reviews(service, 20)
    assert all(len(outbox) == 1 for outbox in (await outboxes(storage, ids)).values())
    assert len(publisher.events) == 20
    statements: list[str] = []
    storage._db.set_trace_callback(statements.append)
    await service.drain()
    assert statements.count("BEGIN IMMEDIATE") == 1  # twenty sessions, one transaction
    assert not [s for s in statements if s.startswith("SELECT")]  # and not one of them read back
    assert await outboxes(storage, ids) == {sid: [] for sid in ids}
    await storage.close()


async def test_a_session_written_since_its_publish_keeps_what_was_not_published(tmp_path: Path) -> None:
    storage, publisher = SqliteCheckpointStorage(tmp_path / "s.db"), InMemoryEventPublisher()
    service = service_on(storage, publisher)
    (sid,) = await start_reviews(service, 1)
    stored = await storage.load(sid)
    assert stored is not None
    stored.checkpoint.outbox.append(dict(EVENT, id="from-another-process"))  # not published by this one
    await storage.save(stored.checkpoint, expected_version=stored.version)
    await service.drain()
    assert [e["id"] for e in (await outboxes(storage, [sid]))[sid]] == ["from-another-process"]
    await storage.close()


async def test_a_storage_without_in_place_clearing_is_cleared_by_read_and_rewrite() -> None:
    storage, publisher = InMemoryCheckpointStorage(), InMemoryEventPublisher()
    assert not isinstance(storage, OutboxClearing)
    service = service_on(storage, publisher)
    ids = await start_reviews(service, 3)
    await service.drain()
    assert await outboxes(storage, ids) == {sid: [] for sid in ids}


def test_drain_returns_while_a_finished_clean_up_is_still_in_the_set() -> None:
    """A finished task leaves the background set by a callback the loop runs later; drain must not
    spin on it (gathering finished tasks completes without yielding, so that callback never ran).
    Run on a thread of its own so that a spinning drain fails the test instead of hanging it."""
    service = service_on(InMemoryCheckpointStorage(), InMemoryEventPublisher())
    finished: dict[str, bool] = {}

    def run() -> None:
        async def drain_with_a_finished_task() -> None:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            service._background.add(done)  # type: ignore[arg-type]
            await service.drain()

        asyncio.run(drain_with_a_finished_task())
        finished["drained"] = True

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert finished.get("drained"), "drain() kept looping over a task that had finished"


async def test_a_decision_answers_before_its_events_are_published(tmp_path: Path) -> None:
    """The person deciding does not wait for the topic: the answer comes while the publish is held,
    the events are already durable in the outbox, and close() publishes them before it returns."""

    class HeldPublisher(InMemoryEventPublisher):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def publish(self, events: Any) -> None:
            if any(e["type"] == "hitl.request.resolved" for e in events):
                await self.release.wait()
            await super().publish(events)

    storage, publisher = SqliteCheckpointStorage(tmp_path / "s.db"), HeldPublisher()
    service = service_on(storage, publisher)
    (sid,) = await start_reviews(service, 1)
    stored = await storage.load(sid)
    assert stored is not None
    call_id = stored.checkpoint.pending_requests[0].call_id
    view = await asyncio.wait_for(service.respond(sid, call_id, {"approved": True}), timeout=10)
    assert view.status == "completed"
    assert "hitl.request.resolved" not in [e["type"] for e in publisher.events]
    assert "hitl.request.resolved" in [e["type"] for e in (await outboxes(storage, [sid]))[sid]]
    publisher.release.set()
    await service.close()
    assert "hitl.request.resolved" in [e["type"] for e in publisher.events]
