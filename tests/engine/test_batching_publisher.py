"""BatchingEventPublisher: concurrent publishes share one send, one send at a time.

The inner publisher here is a recorder whose sends can be held open, so what is in flight at any
moment is seen directly (no timing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from hitl_core.events.publisher import BatchingEventPublisher


class HeldSends:
    """Records each send; a send waits while ``hold`` is cleared; ``fail`` makes sends raise."""

    def __init__(self) -> None:
        self.sends: list[list[str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail_ids: set[str] = set()
        self.closed = False

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        self.sends.append([e["id"] for e in events])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.hold.wait()
            if self.fail_ids & {e["id"] for e in events}:
                raise ConnectionError("topic unavailable (injected)")
        finally:
            self.in_flight -= 1

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


def events(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "type": "t"} for i in ids]


async def publishing(publisher: BatchingEventPublisher, *ids: str) -> asyncio.Future[None]:
    """A publish of ``ids``, given the loop turns it takes to reach a send or the queue behind one."""
    call = asyncio.ensure_future(publisher.publish(events(*ids)))
    for _ in range(3):
        await asyncio.sleep(0)
    return call


async def test_concurrent_publishes_share_one_send() -> None:
    inner = HeldSends()
    publisher = BatchingEventPublisher(inner)
    await asyncio.gather(*(publisher.publish(events(f"e{n}")) for n in range(10)))
    assert inner.sends == [[f"e{n}" for n in range(10)]]
    await publisher.close()
    assert inner.closed


async def test_callers_arriving_during_a_send_go_together_in_the_next() -> None:
    inner = HeldSends()
    publisher = BatchingEventPublisher(inner)
    inner.hold.clear()
    first = await publishing(publisher, "a")
    assert inner.sends == [["a"]]  # on its way, held
    later = [await publishing(publisher, i) for i in ("b", "c")]
    assert inner.sends == [["a"]]  # they wait for the send under way
    inner.hold.set()
    await asyncio.gather(first, *later)
    assert inner.sends == [["a"], ["b", "c"]] and inner.most_in_flight == 1
    await publisher.close()


async def test_a_failed_send_fails_its_own_callers_only() -> None:
    inner = HeldSends()
    publisher = BatchingEventPublisher(inner)
    inner.hold.clear()
    inner.fail_ids = {"bad"}
    first = await publishing(publisher, "bad")
    second = await publishing(publisher, "good")
    inner.hold.set()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], ConnectionError) and results[1] is None
    await publisher.close()


async def test_batches_hold_at_most_max_events_and_close_waits_for_every_send() -> None:
    inner = HeldSends()
    publisher = BatchingEventPublisher(inner, max_events=4)
    calls = [asyncio.ensure_future(publisher.publish(events(f"{n}a", f"{n}b"))) for n in range(5)]
    await asyncio.sleep(0)
    await publisher.close()  # the five callers' sends all went out before the inner publisher closed
    assert all(call.done() for call in calls) and inner.closed
    assert [len(send) for send in inner.sends] == [4, 4, 2]


async def test_a_cancelled_send_does_not_leave_its_callers_waiting() -> None:
    inner = HeldSends()
    publisher = BatchingEventPublisher(inner)
    inner.hold.clear()
    caller = await publishing(publisher, "a")
    assert publisher._flusher is not None
    publisher._flusher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
