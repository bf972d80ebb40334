"""EventPublisher: where outbox entries go once the checkpoint that produced them is saved."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger("hitl_core.events")


@runtime_checkable
class EventPublisher(Protocol):
    """Publishes CloudEvents (JSON dicts). Raising means: keep them in the outbox and retry."""

    async def publish(self, events: Sequence[dict[str, Any]]) -> None: ...

    async def check(self) -> None:
        """Raise if the event bus is unreachable (for the health endpoint)."""
        ...

    async def close(self) -> None: ...


class NullEventPublisher:
    """No event bus configured: events are dropped (logged at debug level)."""

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        for event in events:
            logger.debug("no event bus configured; dropping %s %s", event.get("type"), event.get("id"))

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


class InMemoryEventPublisher:
    """Collects events (tests, embedded use). ``fail_next`` makes the next publishes raise."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail_next = 0

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("event bus unavailable (injected)")
        self.events.extend(events)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


class BatchingEventPublisher:
    """Coalesces concurrent publishes into one call to ``inner``.

    Under load many sessions publish at the same moment; each caller still waits for (and sees
    the failure of) the send that carries its events, but they share one HTTP request to the
    topic. With a single caller it adds one event-loop turn.
    """

    def __init__(self, inner: EventPublisher, *, max_events: int = 200) -> None:
        self.inner = inner
        self.max_events = max_events
        self._waiting: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        if not events:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((list(events), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let concurrent callers join this batch
        while self._waiting:
            batch: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
            count = 0
            while self._waiting and (not batch or count + len(self._waiting[0][0]) <= self.max_events):
                item = self._waiting.pop(0)
                batch.append(item)
                count += len(item[0])
            try:
                await self.inner.publish([e for events, _ in batch for e in events])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            except BaseException:  # cancelled (shutting down): its callers must not wait forever
                for _, done in batch:
                    done.cancel()
                raise
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.inner.close()
