"""Events the service announces (CloudEvents 1.0) and the publishers that carry them.

``EventGridEventPublisher`` (azure-eventgrid) is imported lazily: ``import hitl_core.events``
loads no Azure SDK.
"""

from typing import TYPE_CHECKING, Any

from .models import (
    REQUEST_EVENT_TYPES,
    EventType,
    HitlCloudEvent,
    event_id,
    make_event,
)
from .publisher import EventPublisher, InMemoryEventPublisher, NullEventPublisher

if TYPE_CHECKING:
    from .eventgrid import EventGridEventPublisher


def __getattr__(name: str) -> Any:
    if name == "EventGridEventPublisher":
        from .eventgrid import EventGridEventPublisher

        return EventGridEventPublisher
    raise AttributeError(name)


__all__ = [
    "REQUEST_EVENT_TYPES",
    "EventGridEventPublisher",
    "EventPublisher",
    "EventType",
    "HitlCloudEvent",
    "InMemoryEventPublisher",
    "NullEventPublisher",
    "event_id",
    "make_event",
]
