"""The event contract: types, source, subject and deterministic ids.

Ids are derived from (session, call, type, discriminator) so the same fact always carries the
same id: a republished outbox entry or an Event Grid redelivery can be recognised downstream.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_jsonable_python


class EventType(enum.StrEnum):
    REQUEST_CREATED = "hitl.request.created"
    REQUEST_RESOLVED = "hitl.request.resolved"
    REQUEST_EXPIRED = "hitl.request.expired"
    REQUEST_REMINDER = "hitl.request.reminder"
    REQUEST_ESCALATED = "hitl.request.escalated"
    REQUEST_VOTE_RECORDED = "hitl.request.vote_recorded"
    REQUEST_CLAIMED = "hitl.request.claimed"
    SESSION_COMPLETED = "hitl.session.completed"
    SESSION_FAILED = "hitl.session.failed"
    SESSION_CANCELLED = "hitl.session.cancelled"


#: Events that ask a person to act (the notification function consumes these).
REQUEST_EVENT_TYPES: frozenset[str] = frozenset(
    {EventType.REQUEST_CREATED, EventType.REQUEST_REMINDER, EventType.REQUEST_ESCALATED}
)

#: Data key of ``hitl.request.created`` / ``.resolved`` / ``.expired`` events: true when a deadline
#: orchestration watches the request (see :func:`tracks_deadline`). The ``track_deadlines``
#: subscription filters on it (an Event Grid advanced filter), so a request without a deadline or an
#: escalation chain costs no execution of that function.
DEADLINE_TRACKED = "deadline_tracked"


def tracks_deadline(data: Mapping[str, Any]) -> bool:
    """Whether a deadline orchestration watches the request an event's data describes: the request
    has a deadline, or its approval policy has an escalation chain (which may begin before any
    deadline, with a reminder step)."""
    approval = data.get("approval")
    return bool(data.get("deadline") or (isinstance(approval, Mapping) and approval.get("escalation")))


_NAMESPACE = uuid.UUID("6f1d1c34-8a5e-4a57-9a0e-2d5f3b8e7c11")


def event_id(session_id: str, call_id: str | None, event_type: str, discriminator: str = "") -> str:
    """A UUID that is the same every time the same fact is announced."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join((session_id, call_id or "", event_type, discriminator))))


class HitlCloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope as the service publishes it (and the outbox stores it)."""

    model_config = ConfigDict(extra="allow")

    id: str
    source: str
    type: str
    specversion: str = "1.0"
    subject: str | None = None
    time: str | None = None
    datacontenttype: str = "application/json"
    data: Any = None


def make_event(
    event_type: EventType | str,
    *,
    workflow: str,
    session_id: str,
    call_id: str | None,
    data: Any,
    discriminator: str = "",
    time: dt.datetime | None = None,
) -> dict[str, Any]:
    """Build the JSON form of one event (what goes into the outbox and onto the wire).

    The dict is written out with the fields of :class:`HitlCloudEvent`, in its order, rather than
    built as that model and dumped: every event is made on a write's hot path, and the model would
    walk the data a second time only to find it is already JSON (``to_jsonable_python`` turns what
    is not — a datetime, a model — into JSON, as ``model_dump(mode="json")`` did).
    """
    subject = f"sessions/{session_id}/requests/{call_id}" if call_id else f"sessions/{session_id}"
    moment = time or dt.datetime.now(dt.UTC)
    return {
        "id": event_id(session_id, call_id, str(event_type), discriminator),
        "source": f"/workflows/{workflow}",
        "type": str(event_type),
        "specversion": "1.0",
        "subject": subject,
        "time": moment.isoformat(),
        "datacontenttype": "application/json",
        "data": to_jsonable_python(data),
    }
