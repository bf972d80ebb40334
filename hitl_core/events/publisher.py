"""EventPublisher: where outbox entries go once the checkpoint that produced them is saved."""

from __future__ import annotations

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
